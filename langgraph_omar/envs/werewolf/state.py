"""Werewolf game state (a JSON-able TypedDict with LangGraph reducers) and what each player may see of it.

Visibility is carried by every event's `audience`: None for public events, else the names allowed to see it
(the werewolves' channel, the seer's results, the witch's news of the victim). `observe` is the only way a
player's view is built, so no prompt can hold an event outside the player's audience, nor another's role
(roles are never put in events unless `reveal_role_on_death` announces a dead player's role publicly).
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, NotRequired, TypedDict

from langgraph_omar.conversation.calls import TurnReward
from langgraph_omar.conversation.observations import sees
from langgraph_omar.conversation.state import FallbackRecord
from langgraph_omar.envs.werewolf.config import WEREWOLF, WerewolfConfig

APPEND_FIELDS = ("events", "actions", "fallbacks", "nights")


class Event(TypedDict):
    step: int
    round: int
    phase: str
    audience: list[str] | None  # None: everyone
    speaker: str | None
    text: str


class ActionRecord(TypedDict):
    step: int
    round: int
    phase: str
    kind: str
    player: str
    raw: str
    verb: str | None  # None: no move (abstained by fallback) or a chat turn
    target: str | None
    speech: str | None  # chat turns only
    fallback: bool
    lenient: bool
    truncated: bool
    call_id: NotRequired[str]  # the model call that chose it (set by the graph; see conversation.calls)


class Fallback(FallbackRecord):
    """The conversation building blocks' fallback record: `role` is the player's game role (Werewolf, Seer,
    ...), `turn` the step of the game at which the action was due, `fallback` the move played instead (e.g.
    "VOTE Bram", "PASS", "no action", "silence"); plus the player."""

    player: str


class Task(TypedDict):
    kind: str
    players: list[str]
    step: int  # 0 while pending; set when the group is called to act


class NightRecord(TypedDict):
    wolf_target: str | None
    doctor_target: str | None
    guard_target: str | None
    saved: bool
    poisoned: str | None


class NightLog(NightRecord):
    """A night as dawn resolved it."""

    round: int


class Elimination(TypedDict):
    round: int
    cause: str  # "werewolves" | "poison" | "vote"


class WerewolfState(TypedDict, total=False):
    """The whole game. Input: `{}` or `{"seed": int}`; the rest is filled by the game's setup."""

    seed: int
    players: list[str]  # seating order, which is also the speaking order
    roles: dict[str, str]
    alive: list[str]
    round: int  # 1-based night+day cycle; 0 before the first phase
    phase: str
    step: int  # increments each time a group of players is asked to act: the "turn"
    pending: list[Task]
    current: Task | None
    witch_save_available: bool
    witch_poison_available: bool
    guard_last_target: str | None
    night: NightRecord
    nights: Annotated[list[NightLog], operator.add]  # every night resolved so far
    eliminated: dict[str, Elimination]
    events: Annotated[list[Event], operator.add]
    actions: Annotated[list[ActionRecord], operator.add]
    fallbacks: Annotated[list[Fallback], operator.add]
    finished: bool
    winner: str | None  # "Villagers", "Werewolves", or None for a draw
    rewards: dict[str, float]  # game role -> the mean reward of its players (what evaluation seats read)
    agent_rewards: dict[str, float]  # player -> reward (each player's turn chain ends on its own)
    turn_rewards: list[TurnReward]  # behaviour-level rewards of the model calls, when the rules ask for them
    metrics: dict[str, Any]


class Observation(TypedDict):
    """Everything one player may know when asked to act; prompts are built from this alone."""

    player: str
    role: str
    goal: str
    secret: str
    teammates: list[str]  # fellow werewolves; empty for everyone else
    round: int
    phase: str
    kind: str
    step: int
    alive: list[str]
    events: list[str]  # rendered visible events, oldest first
    legal: dict[str, list[str]]  # verb -> allowed targets
    victim: str | None  # tonight's attacked player: the witch's turn only


def apply_update(state: WerewolfState, update: dict[str, Any]) -> WerewolfState:
    """The state after `update`, with LangGraph's semantics: append to APPEND_FIELDS, replace the rest."""
    merged: dict[str, Any] = dict(state)
    for key, value in update.items():
        merged[key] = list(merged.get(key, [])) + list(value) if key in APPEND_FIELDS else value
    return merged  # type: ignore[return-value]


def combine_updates(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """One update equivalent to applying `first` then `second`."""
    combined = dict(first)
    for key, value in second.items():
        combined[key] = list(combined.get(key, [])) + list(value) if key in APPEND_FIELDS else value
    return combined


def make_event(
    state: WerewolfState, text: str, audience: list[str] | None = None, speaker: str | None = None
) -> Event:
    return Event(
        step=state.get("step", 0),
        round=state.get("round", 0),
        phase=state.get("phase", ""),
        audience=None if audience is None else list(audience),
        speaker=speaker,
        text=text,
    )


def render_event(event: Event) -> str:
    """'[Night 1, werewolves only] Bram: ...', '[Day 2] Nobody died during the night.'"""
    phase = event["phase"]
    if phase in ("", "end"):
        when = "Start" if not phase else "End"
    else:
        when = f"{'Night' if phase.startswith('Night') else 'Day'} {event['round']}"
    if event["audience"] is not None:
        when += ", werewolves only" if phase == "Night_werewolf" else ", private"
    said = f"{event['speaker']}: " if event["speaker"] else ""
    return f"[{when}] {said}{event['text']}"


def visible_events(state: WerewolfState, player: str) -> list[Event]:
    return [e for e in state.get("events", []) if sees(player, e["audience"], e["speaker"])]


def observe(
    state: WerewolfState, config: WerewolfConfig, player: str, kind: str, legal: dict[str, list[str]]
) -> Observation:
    """What `player` may see when asked for an action of `kind` whose legal moves are `legal`."""
    role = state["roles"][player]
    wolves = [p for p in state["players"] if state["roles"][p] == WEREWOLF and p != player]
    night = state.get("night")
    return Observation(
        player=player,
        role=role,
        goal=config.role_goals.get(role, ""),
        secret=config.role_secrets.get(role, ""),
        teammates=wolves if role == WEREWOLF else [],
        round=state.get("round", 0),
        phase=state.get("phase", ""),
        kind=kind,
        step=state.get("step", 0),
        alive=list(state.get("alive", [])),
        events=[render_event(e) for e in visible_events(state, player)],
        legal={verb: list(targets) for verb, targets in legal.items()},
        victim=night["wolf_target"] if kind == "witch" and night else None,
    )
