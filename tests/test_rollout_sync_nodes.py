"""Tutorial-style sync `def` nodes: the episodes' model calls are in flight together, as many as
`max_concurrency` allows, not as many as the event loop's default thread pool happens to hold."""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.graph import END, START, StateGraph

from langgraph_omar.rollout import run_episodes

DEFAULT_POOL = min(32, (os.cpu_count() or 1) + 4)  # asyncio's default thread pool size


class CountingModel(BaseChatModel):
    """Counts the calls in flight: each waits (up to a bound) until `expected` calls are in at once."""

    expected: int
    in_flight: int = 0
    most: int = 0
    lock: Any = None
    barrier: Any = None

    def model_post_init(self, context: Any) -> None:
        self.lock = threading.Lock()
        self.barrier = threading.Barrier(self.expected, timeout=10)

    @property
    def _llm_type(self) -> str:
        return "counting"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> ChatResult:
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        # fewer calls than expected in flight break the barrier after its timeout: `most` says how many
        with contextlib.suppress(threading.BrokenBarrierError):
            self.barrier.wait()
        with self.lock:
            self.in_flight -= 1
        return ChatResult(generations=[ChatGeneration(message=AIMessage("ok"))])


class State(TypedDict, total=False):
    reply: str
    rewards: dict[str, float]


def sync_graph(model: BaseChatModel) -> Any:
    def talk(state: State) -> State:  # a plain def node, as in LangGraph's tutorials
        return {"reply": model.invoke("hello").text, "rewards": {"talk": 1.0}}

    graph = StateGraph(State)
    graph.add_node("talk", talk)
    graph.add_edge(START, "talk")
    graph.add_edge("talk", END)
    return graph.compile()


def test_sync_nodes_have_as_many_calls_in_flight_as_max_concurrency_allows():
    episodes = DEFAULT_POOL + 2
    model = CountingModel(expected=episodes)
    done, _ = run_episodes(sync_graph(model), [{}] * episodes, max_concurrency=episodes, progress=False)
    assert all(e.status == "ok" for e in done)
    assert model.most == episodes
