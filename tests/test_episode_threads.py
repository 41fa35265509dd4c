"""Every episode runs on a thread of its own (`thread_id` = its episode id) with its scenario's configurable
values (`sample_config`), so graphs that keep state by thread, and graphs compiled with a checkpointer, run
under `omar` as they run in production."""

from __future__ import annotations

import asyncio
import operator
import sys
import textwrap
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Annotated, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from langgraph_omar import ChatPolicy
from langgraph_omar.cli import main
from langgraph_omar.errors import OmarError
from langgraph_omar.rollout import run_episodes
from langgraph_omar.trajectory import read_episodes


class Booking(TypedDict, total=False):
    guest: str
    seen: list[str]
    said: Annotated[list[str], operator.add]
    rewards: dict[str, float]


def booking_graph(reservations: dict[str, list[str]], checkpointer=None):
    """Like langgraph-swarm's customer-support example: reservations kept by the conversation's thread."""
    model = ChatPolicy(model="tiny", max_tokens=3)

    async def book(state: Booking, config: RunnableConfig):
        reservations[config["configurable"].get("thread_id")].append(state["guest"])
        await asyncio.sleep(0.01)  # the other episode books meanwhile
        return {"said": [(await model.ainvoke(f"booked {state['guest']}")).text]}

    async def confirm(state: Booking, config: RunnableConfig):
        seen = list(reservations[config["configurable"].get("thread_id")])
        return {"seen": seen, "said": [(await model.ainvoke(", ".join(seen))).text], "rewards": {"book": 1.0}}

    graph = StateGraph(Booking)
    graph.add_node("book", book)
    graph.add_node("confirm", confirm)
    graph.add_edge(START, "book")
    graph.add_edge("book", "confirm")
    graph.add_edge("confirm", END)
    return graph.compile(checkpointer=checkpointer)


def test_concurrent_episodes_of_a_graph_keeping_state_by_thread_never_see_each_other(policy):
    reservations: dict[str, list[str]] = defaultdict(list)
    inputs = [{"guest": "ann"}, {"guest": "bob"}]
    episodes, _ = run_episodes(
        booking_graph(reservations), inputs, [{"episode_id": "a"}, {"episode_id": "b"}]
    )
    assert [e.status for e in episodes] == ["ok", "ok"]
    assert dict(reservations) == {"a": ["ann"], "b": ["bob"]}
    assert "bob" not in policy.tokenizer.decode(episodes[0].turns[-1].prompt_ids)


def test_a_graph_compiled_with_a_checkpointer_runs_one_thread_per_episode(policy):
    saver = InMemorySaver()
    graph = booking_graph(defaultdict(list), checkpointer=saver)
    inputs = [{"guest": "ann"}, {"guest": "bob"}]
    episodes, _ = run_episodes(graph, inputs, [{"episode_id": "a"}, {"episode_id": "b"}], progress=False)
    assert [e.status for e in episodes] == ["ok", "ok"], episodes[0].error
    assert graph.get_state({"configurable": {"thread_id": "a"}}).values["seen"] == ["ann"]
    assert graph.get_state({"configurable": {"thread_id": "b"}}).values["seen"] == ["bob"]


MODULE = """
from typing import TypedDict
from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    topic: str
    rewards: dict


def sample_input(seed):
    return {"topic": "tea"}


def sample_config(seed):
    return {CONFIG}


def build(model):
    async def talk(state, config):
        user = config["configurable"]["user_id"]
        await model.ainvoke(f"{user} asks about {state['topic']}")
        return {"rewards": {"talk": 1.0}}

    graph = StateGraph(State)
    graph.add_node("talk", talk)
    graph.add_edge(START, "talk")
    graph.add_edge("talk", END)
    return graph.compile()
"""


@pytest.fixture
def own_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    return tmp_path


def write_module(folder: Path, config: str) -> str:
    name = f"configured_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(textwrap.dedent(MODULE).replace("{CONFIG}", config))
    return f"{name}:build"


def test_sample_config_gives_each_scenario_its_configurable_values(policy, own_folder):
    target = write_module(own_folder, '{"user_id": f"user{seed}"}')
    argv = ["rollout", target, "--episodes", "2", "--seed", "3", "--out", "c.jsonl", "--model", "tiny"]
    assert main([*argv, "--max-tokens", "2"]) == 0
    episodes = read_episodes(own_folder / "c.jsonl")  # in the order they finished
    prompts = {e.metadata["seed"]: policy.tokenizer.decode(e.turns[0].prompt_ids) for e in episodes}
    assert "user3 asks" in prompts[3] and "user4 asks" in prompts[4]


def test_sample_config_may_not_set_the_thread(policy, own_folder, capsys):
    target = write_module(own_folder, '{"thread_id": "shared", "user_id": "u"}')
    assert main(["rollout", target, "--episodes", "1", "--out", "c.jsonl", "--model", "tiny"]) == 2
    assert "sample_config(0) sets thread_id" in capsys.readouterr().err
    with pytest.raises(OmarError):
        from langgraph_omar.envs.registry import load_environment

        load_environment(target).sample_config(0)
