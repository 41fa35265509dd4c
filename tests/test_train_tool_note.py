"""`omar train` says "0 tool calls in N episodes" once per self-play iteration whose model was offered tools
and never called one, as `omar rollout` does."""

from __future__ import annotations

from typing import Any, TypedDict

import pytest
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from selfplay_toy import toy_config, toy_policy

from langgraph_omar.envs.registry import load_environment
from langgraph_omar.rl.selfplay import TrainingWarning, run_selfplay


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class State(TypedDict, total=False):
    prompt: str
    rewards: dict[str, float]


def graph_with_tools(model: Any) -> Any:
    """One role offered a tool it may call (tool_choice "auto"): the tiny model answers in text."""
    llm = model.bind_tools([add])

    async def speaker(state: State) -> dict[str, Any]:
        reply = await llm.ainvoke(state["prompt"])
        return {"rewards": {"speaker": float(len(reply.tool_calls)) + len(reply.text) / 100}}

    graph = StateGraph(State)
    graph.add_node("speaker", speaker, metadata={"role": "speaker"})
    graph.add_edge(START, "speaker")
    graph.add_edge("speaker", END)
    return graph.compile()


def sample_input(seed: int) -> dict[str, Any]:
    return {"prompt": f"What is {seed} plus 2?"}


def test_each_self_play_iteration_without_a_tool_call_says_so_once(tmp_path):
    spec = "test_train_tool_note:graph_with_tools"
    config = toy_config(
        0,
        2,
        env={"name": spec},
        selfplay={"episodes_per_iteration": 4, "group_size": 2, "max_concurrency": 4},
        update={"micro_batch_size": 4},
    )
    with pytest.warns(TrainingWarning) as caught:
        run_selfplay(config, tmp_path / "run", load_environment(spec), policy=toy_policy(), progress=False)
    notes = [str(w.message) for w in caught if "tool calls" in str(w.message)]
    assert [n.split(":")[0] for n in notes] == ["iteration 0", "iteration 1"], notes
    assert notes[0].startswith(
        "iteration 0: 0 tool calls in 4 episodes, though 4 model calls were offered tools"
    )
