"""The shared action layer: a role's model call is named by its run id, and the records of the final state that
name it (fallbacks, per-turn rewards) land on its recorded turn, with the turn metadata the call carried."""

from __future__ import annotations

import asyncio
import operator
import uuid
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph

from langgraph_omar import ChatPolicy
from langgraph_omar.conversation import (
    ChoiceAction,
    Outcome,
    Role,
    ScriptedChatModel,
    TurnReward,
    build_conversation_graph,
    invoke_model,
    turn_reward,
)
from langgraph_omar.conversation.calls import call_config
from langgraph_omar.tracing import TraceRecorder


def saying(text: str) -> ScriptedChatModel:
    return ScriptedChatModel(respond=lambda messages: text, record_tokens=True)


def test_call_config_names_the_call_its_role_and_its_turn_metadata() -> None:
    node_config: RunnableConfig = {
        "metadata": {"episode_id": "e", "turn_metadata": {"seat": 1}},
        "tags": ["x"],
    }
    config, call_id = call_config(node_config, role="Seer", turn_metadata={"player": "Bram"})
    assert config["run_id"] == uuid.UUID(call_id)
    assert config["metadata"] == {
        "episode_id": "e",
        "role": "Seer",
        "turn_metadata": {"seat": 1, "player": "Bram"},
    }
    assert config["tags"] == ["x"] and node_config["metadata"]["turn_metadata"] == {"seat": 1}  # not mutated
    assert call_config(node_config)[1] != call_id  # every call its own id


def test_a_conversation_fallback_lands_on_the_turn_of_the_replaced_call() -> None:
    players = ["alice", "bob"]
    roles = [
        Role("alice", model=saying("vote bob"), action_format=ChoiceAction("vote", players)),
        Role("bob", model=saying("vote mallory"), action_format=ChoiceAction("vote", players)),
    ]
    graph = build_conversation_graph(roles, turn_order="simultaneous", max_turns=2)
    with TraceRecorder() as recorder:
        final = asyncio.run(graph.ainvoke({}, {"metadata": {"episode_id": "e"}}))
    (episode,) = recorder.trajectories()
    assert [(t.role, t.fallback) for t in episode.turns if t.role == "alice"] == [("alice", None)] * 2
    bobs = episode.turns_of("bob")
    assert [t.fallback for t in bobs] == ["abstain", "abstain"]
    assert [t.run_id for t in bobs] == [record["call_id"] for record in final["fallbacks"]]


class Asking(TypedDict, total=False):
    turn_rewards: Annotated[list[TurnReward], operator.add]
    rewards: dict[str, float]


def test_turn_rewards_and_turn_metadata_land_on_their_turns() -> None:
    model = saying("ok")

    def ask(state: Asking, config: RunnableConfig) -> dict[str, Any]:
        first = invoke_model(model, [HumanMessage("a")], config, role="asker", turn_metadata={"player": "P1"})
        second = invoke_model(model, [HumanMessage("b")], config, role="asker")
        rewards = [turn_reward(second.call_id, 0.25, "good"), turn_reward(second.call_id, 0.5, "better")]
        assert first.text == second.text == "ok"
        return {"turn_rewards": rewards, "rewards": {"asker": 1.0}}

    graph = StateGraph(Asking)
    graph.add_node("ask", ask)
    graph.add_edge(START, "ask")
    graph.add_edge("ask", END)
    with TraceRecorder() as recorder:
        graph.compile().invoke({}, {"metadata": {"episode_id": "e"}})
    (episode,) = recorder.trajectories()
    assert [(t.role, t.node) for t in episode.turns] == [("asker", "ask")] * 2
    assert [t.reward for t in episode.turns] == [0.0, 0.75]  # a call's records add up
    assert [t.metadata for t in episode.turns] == [{"player": "P1"}, {}]
    assert episode.rewards == {"asker": 1.0}


def test_a_malformed_turn_reward_fails_the_episode_in_one_line() -> None:
    def bad(state: Asking) -> dict[str, Any]:
        return {"turn_rewards": [{"reward": 1.0}], "rewards": {"asker": 0.0}}  # type: ignore[list-item]

    graph = StateGraph(Asking)
    graph.add_node("bad", bad)
    graph.add_edge(START, "bad")
    graph.add_edge("bad", END)
    with TraceRecorder() as recorder, pytest.raises(ValueError, match=r"turn_rewards\[0\]: expected"):
        graph.compile().invoke({}, {"metadata": {"episode_id": "e"}})
    assert recorder.trajectories()[0].episode_id == "e"


def test_chat_policy_turns_carry_the_fallback_of_their_call(policy: Any) -> None:
    # Bob has nobody to vote for: whatever the tiny model says, each of his moves falls back.
    chat = ChatPolicy(model="tiny", max_tokens=3)
    roles = [
        Role("alice", model=chat),
        Role("bob", model=chat, action_format=ChoiceAction("vote", [], allow_abstain=False)),
    ]
    with TraceRecorder() as recorder:
        final = build_conversation_graph(roles, max_turns=4).invoke({}, {"metadata": {"episode_id": "e"}})
    (episode,) = recorder.trajectories()
    assert [t.role for t in episode.turns] == ["alice", "bob"] * 2
    assert [t.fallback for t in episode.turns] == [None, "abstain"] * 2
    assert [t.run_id for t in episode.turns_of("bob")] == [r["call_id"] for r in final["fallbacks"]]


def test_a_reward_function_scores_moves_by_the_call_id_on_their_utterances() -> None:
    """Per-move rewards from a plain conversation graph's reward function (not a built-in game): each utterance
    names its model call, and `Outcome.turn_rewards` lands on those turns."""

    def outcome(state: dict[str, Any]) -> Outcome:
        moves = state["transcript"]
        scored = [
            turn_reward(u["call_id"], float(len(u["text"])), "length") for u in moves if u["speaker"] == "a"
        ]
        return Outcome(rewards={"a": 1.0, "b": 0.0}, turn_rewards=scored)

    roles = [Role("a", model=saying("hello")), Role("b", model=saying("hi"))]
    graph = build_conversation_graph(roles, turn_order="round_robin", max_turns=4, reward_fn=outcome)
    with TraceRecorder() as recorder:
        final = graph.invoke({}, {"metadata": {"episode_id": "e"}})
    (episode,) = recorder.trajectories()
    assert [(t.role, t.reward) for t in episode.turns] == [("a", 5.0), ("b", 0.0), ("a", 5.0), ("b", 0.0)]
    assert [u["call_id"] for u in final["transcript"]] == [t.run_id for t in episode.turns]
