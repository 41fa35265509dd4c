"""The router between turns: count the turn, check termination, pick the speakers and fan out to them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from langgraph.types import Command, Send

from langgraph_omar.conversation.state import ConversationState
from langgraph_omar.conversation.termination import Termination
from langgraph_omar.conversation.turn_order import Selector, validated_speakers

SCORE_NODE = "score"
ROUTER_NODE = "next_turn"


class RouterNode(Protocol):
    def __call__(self, state: ConversationState) -> Command: ...


@dataclass(frozen=True)
class TurnPlan:
    update: dict[str, Any]  # written to the state before the turn: turn, silent_turns, speakers / stop_reason
    speakers: list[str]  # empty when the conversation ends
    stop_reason: str | None


def plan_next_turn(
    state: Mapping[str, Any], role_names: Sequence[str], select: Selector, termination: Termination
) -> TurnPlan:
    """Pure decision for the next turn. Before the first turn `state` has no `turn`; after turn t the next
    one is t + 1, and t + 1 turns have been played."""
    previous = state.get("turn")
    turn = 0 if previous is None else previous + 1
    silent_turns = termination.silent_turns_after(state, role_names)
    progressed = {**state, "turn": turn, "silent_turns": silent_turns}
    reason = termination.stop_reason(progressed, role_names, turns_played=turn)
    speakers: list[str] = []
    if reason is None:
        speakers = validated_speakers(select(progressed), role_names, state.get("left") or [])
        if not speakers:
            reason = "no_speakers"
    if reason is not None:
        return TurnPlan({"silent_turns": silent_turns, "speakers": [], "stop_reason": reason}, [], reason)
    return TurnPlan({"turn": turn, "silent_turns": silent_turns, "speakers": speakers}, speakers, None)


def router_node(role_names: Sequence[str], select: Selector, termination: Termination) -> RouterNode:
    """A node that plans the next turn and sends every speaker the same state snapshot (`Send`), so that
    simultaneous moves share one context and run as parallel tasks a batching engine sees together."""

    def next_turn(state: ConversationState) -> Command:
        plan = plan_next_turn(state, role_names, select, termination)
        if plan.stop_reason is not None:
            return Command(update=plan.update, goto=SCORE_NODE)
        snapshot = {**state, **plan.update}
        return Command(update=plan.update, goto=[Send(name, snapshot) for name in plan.speakers])

    return next_turn
