"""run_episodes keeps a graph's own recursion bound (a Werewolf graph sizes one for its longest game)."""

from __future__ import annotations

from typing import TypedDict

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langgraph.graph import END, START, StateGraph

from langgraph_omar.envs.werewolf.config import bundled_config_path, load_werewolf_config
from langgraph_omar.envs.werewolf.graph import build_graph, recursion_limit
from langgraph_omar.rollout import bound_recursion_limit, run_episodes

STEPS = 520  # more supersteps than run_episodes' default limit of 500


class Counter(TypedDict):
    count: int


def counting_graph():
    """One node that loops on itself until it has run STEPS times: STEPS supersteps in all."""
    graph = StateGraph(Counter)
    graph.add_node("tick", lambda state: {"count": state["count"] + 1})
    graph.add_edge(START, "tick")
    graph.add_conditional_edges(
        "tick", lambda state: END if state["count"] >= STEPS else "tick", ["tick", END]
    )
    return graph.compile()


def test_a_graph_without_its_own_bound_gets_the_default_limit() -> None:
    graph = counting_graph()
    assert bound_recursion_limit(graph) == 0
    (episode,), summary = run_episodes(graph, [{"count": 0}], progress=False)
    assert summary.failed == 1 and episode.status == "failed"
    assert episode.error is not None and "GraphRecursionError" in episode.error


def test_a_graph_bound_to_a_larger_limit_keeps_it() -> None:
    graph = counting_graph().with_config(recursion_limit=STEPS + 10)
    assert bound_recursion_limit(graph) == STEPS + 10
    (episode,), summary = run_episodes(graph, [{"count": 0}], progress=False)
    assert summary.failed == 0 and episode.status == "ok", episode.error


def test_a_larger_call_time_limit_still_wins_over_a_smaller_bound() -> None:
    graph = counting_graph().with_config(recursion_limit=30)
    (episode,), _ = run_episodes(graph, [{"count": 0}], progress=False, recursion_limit=STEPS + 10)
    assert episode.status == "ok", episode.error


def test_the_werewolf_graph_bound_is_the_one_rollout_uses() -> None:
    # guard_9: the largest bundled roster, whose whole-game bound (880) is above the default 500
    game = load_werewolf_config(bundled_config_path("guard_9"))
    graph = build_graph(FakeListChatModel(responses=["PASS"]), game)
    assert bound_recursion_limit(graph) == recursion_limit(game) > 500
