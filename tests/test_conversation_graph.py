"""build_conversation_graph: turn orders, termination, fallbacks, scoring, sync and async execution."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Mapping
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.graph import END, START, StateGraph

from langgraph_omar.conversation import (
    ChoiceAction,
    ConversationState,
    FreeText,
    Outcome,
    Role,
    ScriptedChatModel,
    build_conversation_graph,
    role_node,
)


def saying(text: str) -> ScriptedChatModel:
    return ScriptedChatModel(respond=lambda messages: text)


def counting(name: str) -> ScriptedChatModel:
    """Answers "<name> <number of transcript messages seen>" (all messages but the system prompt)."""
    return ScriptedChatModel(respond=lambda messages: f"{name} {len(messages) - 1}")


def test_round_robin_order_turns_and_metrics() -> None:
    roles = [Role("alice", model=counting("alice")), Role("bob", model=counting("bob"))]
    final = build_conversation_graph(roles, max_turns=5).invoke({})
    # Turn t is played by role t mod 2 and sees the t utterances before it.
    assert [(u["speaker"], u["text"], u["turn"]) for u in final["transcript"]] == [
        ("alice", "alice 0", 0),
        ("bob", "bob 1", 1),
        ("alice", "alice 2", 2),
        ("bob", "bob 3", 3),
        ("alice", "alice 4", 4),
    ]
    assert final["stop_reason"] == "max_turns"
    assert final["metrics"]["turns"] == 5
    assert final["metrics"]["utterances_per_role"] == {"alice": 3, "bob": 2}
    assert "rewards" not in final  # no reward function given


def test_simultaneous_moves_share_one_context() -> None:
    models = {name: counting(name) for name in ("a", "b", "c")}
    roles = [Role(name, model=model) for name, model in models.items()]
    final = build_conversation_graph(roles, turn_order="simultaneous", max_turns=2).invoke({})
    # Turn 0: all three see nothing; turn 1: all three see the three moves of turn 0.
    assert sorted((u["turn"], u["text"]) for u in final["transcript"]) == [
        (0, "a 0"), (0, "b 0"), (0, "c 0"), (1, "a 3"), (1, "b 3"), (1, "c 3"),
    ]  # fmt: skip
    assert final["metrics"]["turns"] == 2
    second_turn_views = [[m.text for m in model.calls[1][1:]] for model in models.values()]
    assert second_turn_views[0] == ["a 0", "b 0", "c 0"]  # a's own move first, as an AIMessage
    assert sorted(second_turn_views[1]) == sorted(second_turn_views[0])


class MeetingModel(BaseChatModel):
    """Completes a call only once `parties` calls are in flight at the same time (else times out), which
    proves that simultaneous moves reach the model together, as a batching engine needs."""

    parties: int
    barrier: Any = None
    arrived: int = 0
    everyone_here: Any = None

    @property
    def _llm_type(self) -> str:
        return "meeting"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:  # fmt: skip
        if self.barrier is None:
            raise AssertionError("barrier not set")
        self.barrier.wait(timeout=10)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="met"))])

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any,
    ) -> ChatResult:  # fmt: skip
        self.arrived += 1
        if self.arrived == self.parties:
            self.everyone_here.set()
        await asyncio.wait_for(self.everyone_here.wait(), timeout=10)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="met"))])


def test_simultaneous_calls_are_concurrent_under_invoke() -> None:
    model = MeetingModel(parties=3, barrier=threading.Barrier(3))
    roles = [Role(name, model=model) for name in ("a", "b", "c")]
    final = build_conversation_graph(roles, turn_order="simultaneous", max_turns=1).invoke({})
    assert [u["text"] for u in final["transcript"]] == ["met"] * 3


async def test_simultaneous_calls_are_concurrent_under_ainvoke() -> None:
    model = MeetingModel(parties=3, everyone_here=asyncio.Event())
    roles = [Role(name, model=model) for name in ("a", "b", "c")]
    final = await build_conversation_graph(roles, turn_order="simultaneous", max_turns=1).ainvoke({})
    assert [u["text"] for u in final["transcript"]] == ["met"] * 3


def test_user_selector_picks_speakers() -> None:
    # The host speaks on even turns, both guests together on odd turns.
    def host_then_guests(state: Mapping[str, Any]) -> list[str]:
        return ["host"] if state["turn"] % 2 == 0 else ["guest1", "guest2"]

    roles = [Role(name, model=saying(name)) for name in ("host", "guest1", "guest2")]
    final = build_conversation_graph(roles, turn_order=host_then_guests, max_turns=3).invoke({})
    assert [(u["turn"], u["speaker"]) for u in final["transcript"]] == [
        (0, "host"), (1, "guest1"), (1, "guest2"), (2, "host"),
    ]  # fmt: skip


def test_selector_naming_an_unknown_role_is_a_clear_error() -> None:
    graph = build_conversation_graph([Role("a", model=saying("x"))], turn_order=lambda state: ["zed"])
    with pytest.raises(ValueError, match="unknown roles \\['zed'\\]"):
        graph.invoke({})


def test_a_role_leaving_ends_the_conversation() -> None:
    leaver = Role("bob", model=saying("I'm done [leave]"), action_format=FreeText(leave_marker="[leave]"))
    roles = [Role("alice", model=saying("hi")), leaver]
    final = build_conversation_graph(roles, max_turns=10).invoke({})
    assert final["stop_reason"] == "left:bob"
    assert final["left"] == ["bob"]
    assert final["transcript"][-1]["action"] == {"type": "leave"}
    assert final["metrics"]["turns"] == 2


def test_with_leave_ends_all_the_others_go_on() -> None:
    leaver = Role("bob", model=saying("[leave]"), action_format=FreeText(leave_marker="[leave]"))
    roles = [Role("alice", model=saying("hi")), leaver, Role("carol", model=saying("hey"))]
    final = build_conversation_graph(roles, max_turns=6, leave_ends="all").invoke({})
    # Turn t goes to role t mod 3, or the next one still present: bob leaves on turn 1, so turn 4 (bob's)
    # goes to carol, and turn 5 is carol's own: alice, bob, carol, alice, carol, carol.
    assert [u["speaker"] for u in final["transcript"]] == ["alice", "bob", "carol", "alice", "carol", "carol"]
    assert final["stop_reason"] == "max_turns"


def test_user_stop_condition() -> None:
    roles = [Role("alice", model=saying("deal")), Role("bob", model=saying("no"))]
    final = build_conversation_graph(
        roles, max_turns=10, stop_when=lambda state: any(u["text"] == "no" for u in state["transcript"])
    ).invoke({})
    assert final["stop_reason"] == "condition"
    assert len(final["transcript"]) == 2


def test_consecutive_silent_turns_end_the_conversation() -> None:
    # alice speaks once then falls silent; bob never speaks. Turns: 0 alice "hi" (not silent),
    # 1 bob "", 2 alice "", -> two consecutive silent turns: stop before turn 3.
    alice = ScriptedChatModel(respond=lambda messages: "hi" if len(messages) == 1 else "  ")
    roles = [Role("alice", model=alice), Role("bob", model=saying(""))]
    final = build_conversation_graph(roles, max_turns=10, max_silent_turns=2).invoke({})
    assert final["stop_reason"] == "silence"
    assert [u["action"]["type"] for u in final["transcript"]] == ["speak", "none", "none"]
    assert final["metrics"]["silent_utterances"] == 2


def test_illegal_votes_are_replaced_and_recorded() -> None:
    players = ["alice", "bob"]
    roles = [
        Role("alice", model=saying("vote bob"), action_format=ChoiceAction("vote", players)),
        Role("bob", model=saying("vote mallory"), action_format=ChoiceAction("vote", players)),
    ]
    final = build_conversation_graph(roles, turn_order="simultaneous", max_turns=1).invoke({})
    actions = {u["speaker"]: u["action"] for u in final["transcript"]}
    assert actions == {"alice": {"type": "vote", "target": "bob"}, "bob": {"type": "abstain"}}
    uuid.UUID(
        final["fallbacks"][0].pop("call_id")
    )  # the model call it replaced (its turn gets Turn.fallback)
    assert final["fallbacks"] == [
        {
            "role": "bob",
            "turn": 0,
            "raw": "vote mallory",
            "fallback": "abstain",
            "reason": "vote 'mallory' is not a legal choice (legal: alice, bob)",
            "action": {"type": "abstain"},
        }
    ]
    assert final["metrics"]["fallbacks"] == 1


def test_reward_fn_outcome_lands_in_final_state() -> None:
    def reward(state: Mapping[str, Any]) -> Outcome:
        said = {u["speaker"]: u["text"] for u in state["transcript"]}
        return Outcome(
            rewards={"alice": 1.0 if said["bob"] == "yes" else 0.0, "bob": 0.5},
            reward_dimensions={"alice": {"goal": 9}},
            metrics={"agreed": True},
        )

    roles = [Role("alice", model=saying("deal?")), Role("bob", model=saying("yes"))]
    final = build_conversation_graph(roles, max_turns=2, reward_fn=reward).invoke({})
    assert final["rewards"] == {"alice": 1.0, "bob": 0.5}
    assert final["reward_dimensions"] == {"alice": {"goal": 9.0}}
    assert final["metrics"]["agreed"] is True and final["metrics"]["turns"] == 2


@pytest.mark.parametrize(
    ("rewards", "message"),
    [
        ({"zed": 1.0}, "unknown roles"),
        ({"alice": float("nan")}, "finite number"),
        ({"alice": "high"}, "finite number"),
        ([1.0], "mapping"),
    ],
)
def test_bad_rewards_are_clear_errors(rewards: Any, message: str) -> None:
    graph = build_conversation_graph(
        [Role("alice", model=saying("x"))], max_turns=1, reward_fn=lambda s: rewards
    )
    with pytest.raises(ValueError, match=message):
        graph.invoke({})


def test_model_calls_carry_the_node_metadata_and_config() -> None:
    model = saying("x")
    roles = [Role("alice", model=model), Role("bob", model=model)]
    graph = build_conversation_graph(roles, max_turns=2)
    graph.invoke({}, {"metadata": {"episode_id": "ep-7"}})
    assert [(m["role"], m["langgraph_node"], m["episode_id"]) for m in model.call_metadata] == [
        ("alice", "alice", "ep-7"),
        ("bob", "bob", "ep-7"),
    ]


async def test_abatch_runs_episodes_through_the_async_path() -> None:
    model = counting("x")
    graph = build_conversation_graph([Role("a", model=model), Role("b", model=model)], max_turns=3)
    finals = await graph.abatch([{"scenario": {"id": str(i)}} for i in range(4)])
    assert [len(final["transcript"]) for final in finals] == [3, 3, 3, 3]
    assert model.async_calls == 12  # 4 episodes x 3 turns, all awaited (no thread per call)
    assert [final["scenario"]["id"] for final in finals] == ["0", "1", "2", "3"]


def test_batch_runs_episodes_without_cross_talk() -> None:
    graph = build_conversation_graph(
        [Role("a", model=counting("a")), Role("b", model=counting("b"))], max_turns=3
    )
    finals = graph.batch([{}, {}, {}])
    assert all([u["text"] for u in final["transcript"]] == ["a 0", "b 1", "a 2"] for final in finals)


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        ([], "at least one role"),
        ([Role("a", model=saying("x")), Role("a", model=saying("y"))], "unique"),
    ],
)
def test_bad_role_lists_are_clear_errors(roles: list[Role], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_conversation_graph(roles)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "score"}, "reserved"),
        ({"name": "a|b"}, "reserved"),
        ({"name": " "}, "non-blank"),
        ({"name": "a", "model": None}, "model is required"),
        ({"name": "a", "model": "gpt"}, "chat model"),
    ],
)
def test_bad_roles_are_clear_errors(kwargs: dict[str, Any], message: str) -> None:
    kwargs.setdefault("model", saying("x"))
    with pytest.raises(ValueError, match=message):
        Role(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_turns": 0}, "max_turns"),
        ({"max_silent_turns": 0}, "max_silent_turns"),
        ({"leave_ends": "some"}, "leave_ends"),
        ({"turn_order": "random"}, "turn_order"),
    ],
)
def test_bad_graph_options_are_clear_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_conversation_graph([Role("a", model=saying("x"))], **kwargs)


def test_one_player_with_two_action_formats_in_a_hand_written_graph() -> None:
    # bob talks in one node and votes in another: two Role objects named "bob", two node names.
    model = ScriptedChatModel(
        respond=lambda messages: "vote alice" if "`vote NAME`" in messages[0].text else "hm"
    )
    talking, voting = (
        Role("bob", model=model),
        Role("bob", model=model, action_format=ChoiceAction("vote", ["alice"])),
    )
    builder = StateGraph(ConversationState)
    builder.add_node("bob_talk", role_node(talking), metadata={"role": "bob"})
    builder.add_node("bob_vote", role_node(voting), metadata={"role": "bob"})
    builder.add_edge(START, "bob_talk")
    builder.add_edge("bob_talk", "bob_vote")
    builder.add_edge("bob_vote", END)
    final = builder.compile().invoke({})
    assert [(u["speaker"], u["action"]) for u in final["transcript"]] == [
        ("bob", {"type": "speak"}),
        ("bob", {"type": "vote", "target": "alice"}),
    ]
    assert [type(m).__name__ for m in model.calls[1]] == ["SystemMessage", "AIMessage"]  # its own talk
    assert [m["langgraph_node"] for m in model.call_metadata] == ["bob_talk", "bob_vote"]


class OptionsModel(BaseChatModel):
    """Replies with the call's `response_format` option (or "none"), to show which options reached the call."""

    @property
    def _llm_type(self) -> str:
        return "options"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:  # fmt: skip
        text = str(kwargs.get("response_format", "none"))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


@pytest.mark.parametrize("use_async", [False, True])
def test_call_options_are_bound_per_call_from_the_state(use_async: bool) -> None:
    def options(state: Mapping[str, Any]) -> dict[str, Any]:
        turn = len(state.get("transcript") or [])
        return {"response_format": f"turn-{turn}"} if turn % 2 == 0 else {}

    roles = [
        Role("a", model=OptionsModel(), call_options=options),
        Role("b", model=OptionsModel(), call_options={"response_format": "fixed"}),
    ]
    graph = build_conversation_graph(roles, turn_order="round_robin", max_turns=4)
    final = asyncio.run(graph.ainvoke({})) if use_async else graph.invoke({})
    assert [u["text"] for u in final["transcript"]] == ["turn-0", "fixed", "turn-2", "fixed"]
