"""When a conversation ends: a turn limit, a role leaving, silence, or a user condition on the state."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langgraph_omar.conversation.actions import SILENT
from langgraph_omar.conversation.state import Utterance


def is_silent_utterance(utterance: Utterance) -> bool:
    """Nothing was said: blank text or the silent action ({"type": "none"})."""
    return utterance["action"].get("type") == SILENT or not utterance["text"].strip()


@dataclass(frozen=True)
class Termination:
    max_turns: int = 20  # turns played at most (a simultaneous turn, where all roles act, counts once)
    max_silent_turns: int | None = None  # end after this many consecutive turns where nobody said anything
    leave_ends: Literal["any", "all"] = "any"  # end when any role left, or only when all of them did
    stop_when: Callable[[Mapping[str, Any]], bool] | None = None  # a user condition, checked before each turn
    is_silent: Callable[[Utterance], bool] = is_silent_utterance  # what counts as saying nothing

    def __post_init__(self) -> None:
        if not isinstance(self.max_turns, int) or self.max_turns < 1:
            raise ValueError(f"max_turns: expected an int >= 1, got {self.max_turns!r}")
        if self.max_silent_turns is not None and (
            not isinstance(self.max_silent_turns, int) or self.max_silent_turns < 1
        ):
            raise ValueError(f"max_silent_turns: expected None or an int >= 1, got {self.max_silent_turns!r}")
        if self.leave_ends not in ("any", "all"):
            raise ValueError(f"leave_ends: expected 'any' or 'all', got {self.leave_ends!r}")
        if self.stop_when is not None and not callable(self.stop_when):
            raise ValueError(f"stop_when: expected a callable state -> bool, got {self.stop_when!r}")

    def silent_turns_after(self, state: Mapping[str, Any], role_names: Sequence[str]) -> int:
        """Consecutive silent turns, counting the turn `state["turn"]` that just ended."""
        turn = state.get("turn")
        if turn is None:
            return 0
        moves = [u for u in state.get("transcript") or [] if u["turn"] == turn and u["speaker"] in role_names]
        if moves and not all(self.is_silent(u) for u in moves):
            return 0
        return (state.get("silent_turns") or 0) + 1

    def stop_reason(
        self, state: Mapping[str, Any], role_names: Sequence[str], turns_played: int
    ) -> str | None:
        """Why the conversation should end before the next turn, or None to go on. `state` already holds
        the updated `silent_turns`."""
        left = list(state.get("left") or [])
        if left and (self.leave_ends == "any" or set(role_names) <= set(left)):
            return f"left:{left[0]}" if self.leave_ends == "any" else "all_left"
        if self.stop_when is not None and self.stop_when(state):
            return "condition"
        if self.max_silent_turns is not None and (state.get("silent_turns") or 0) >= self.max_silent_turns:
            return "silence"
        if turns_played >= self.max_turns:
            return "max_turns"
        return None
