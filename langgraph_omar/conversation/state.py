"""The typed state a conversation graph carries, and its transcript entries.

Input state: a conversation graph accepts `{}` or any of these input fields:

- `scenario`: per-episode facts (`Scenario`): an `id`, a `seed` (seeds random fallbacks), a `description`
  every role sees, and `roles`: role name -> `RoleBrief` overriding that role's persona, goal or private info
  for this episode only (one compiled graph serves many scenarios).
- `transcript`: opening utterances (for example a narrator's), stamped with `turn=-1` by convention.

Output convention shared by environments and the rollout runner: the final state holds `rewards`
(role -> float), optional `reward_dimensions` (role -> name -> float), `metrics` (dict), `fallbacks`, and
optional `turn_rewards` (per-turn rewards, see `conversation.calls`).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, NotRequired, TypedDict

from langgraph_omar.conversation.calls import TurnReward


class Utterance(TypedDict):
    """One move in the transcript. `visible_to=None` means public; otherwise only the listed roles (and the
    speaker) see it: private channels are utterances with an audience."""

    speaker: str
    text: str
    action: dict[str, Any]  # the parsed action, JSON-able, e.g. {"type": "vote", "target": "bob"}
    visible_to: list[str] | None
    turn: int
    call_id: NotRequired[str]  # the model call that wrote it (Turn.run_id), for per-turn rewards by move


class FallbackRecord(TypedDict):
    """A move whose text was not a legal action and was replaced by a defined fallback."""

    role: str
    turn: int
    raw: str  # what the model (or person) said
    fallback: str  # which fallback replaced it: "abstain" or "random"
    reason: str  # why the raw text was not accepted
    action: dict[str, Any]  # the action that was used instead
    call_id: NotRequired[str]  # the model call whose reply was replaced: its turn gets Turn.fallback


class RoleBrief(TypedDict, total=False):
    persona: str
    goal: str
    private_info: str | list[str]


class Scenario(TypedDict, total=False):
    id: str
    seed: int | str
    description: str
    roles: dict[str, RoleBrief]


class ConversationState(TypedDict, total=False):
    """State of a conversation graph. Subclass it to add environment fields (e.g. who is still alive)."""

    scenario: Scenario
    transcript: Annotated[list[Utterance], operator.add]
    fallbacks: Annotated[list[FallbackRecord], operator.add]
    turn_rewards: Annotated[list[TurnReward], operator.add]  # per-turn rewards, by model call
    left: Annotated[list[str], operator.add]  # roles that left, in the order they left
    turn: int  # index of the turn being played (0-based), set by the router
    silent_turns: int  # consecutive completed turns in which nobody said anything
    speakers: list[str]  # who acts in the current turn
    stop_reason: str  # why the conversation ended: "max_turns", "left:NAME", "silence", "condition", ...
    rewards: dict[str, float]
    reward_dimensions: dict[str, dict[str, float]]
    metrics: dict[str, Any]


def make_utterance(
    speaker: str,
    text: str,
    *,
    turn: int,
    action: Mapping[str, Any] | None = None,
    visible_to: Sequence[str] | None = None,
    call_id: str | None = None,
) -> Utterance:
    """Build a transcript entry (also handy for narrator lines in a hand-written graph)."""
    utterance = Utterance(
        speaker=speaker,
        text=text,
        action=dict(action) if action is not None else {"type": "speak"},
        visible_to=list(visible_to) if visible_to is not None else None,
        turn=turn,
    )
    if call_id is not None:
        utterance["call_id"] = call_id
    return utterance


def current_turn(state: Mapping[str, Any]) -> int:
    """The turn being played: `state["turn"]` when a router sets it, else the number of utterances so far
    (so a hand-written graph without a router still stamps increasing turns)."""
    turn = state.get("turn")
    if turn is None:
        return len(state.get("transcript") or [])
    if not isinstance(turn, int) or isinstance(turn, bool):
        raise ValueError(f"state key 'turn': expected an int, got {type(turn).__name__}")
    return turn


def scenario_of(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """The state's `scenario` mapping (empty when absent); a clear error when it has the wrong type."""
    scenario = state.get("scenario") or {}
    if not isinstance(scenario, Mapping):
        raise ValueError(f"state key 'scenario': expected a mapping, got {type(scenario).__name__}")
    return scenario
