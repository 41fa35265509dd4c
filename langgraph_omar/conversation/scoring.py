"""The final `score` node: conversation metrics, and rewards from a user's reward function."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from langgraph_omar.conversation.calls import TurnReward
from langgraph_omar.conversation.state import ConversationState
from langgraph_omar.conversation.termination import is_silent_utterance


@dataclass(frozen=True)
class Outcome:
    """What a reward function may return instead of a plain role -> reward mapping."""

    rewards: Mapping[str, float]  # role -> terminal reward
    reward_dimensions: Mapping[str, Mapping[str, float]] = field(
        default_factory=dict
    )  # role -> name -> score
    metrics: Mapping[str, Any] = field(default_factory=dict)  # merged over the conversation's own metrics
    turn_rewards: Sequence[TurnReward] = ()  # per-move rewards (`turn_reward` of an utterance's call_id)


class ScoreNode(Protocol):
    def __call__(self, state: ConversationState) -> dict[str, Any]: ...


RewardFn = Callable[[Mapping[str, Any]], "Outcome | Mapping[str, float]"]


def conversation_metrics(state: Mapping[str, Any], role_names: Sequence[str]) -> dict[str, Any]:
    """Counts every conversation has: turns played, utterances (per role), silent moves, fallbacks."""
    moves = [u for u in state.get("transcript") or [] if u["speaker"] in role_names]
    played = state.get("turn")
    return {
        "turns": 0 if played is None else played + 1,
        "utterances": len(moves),
        "utterances_per_role": {name: sum(u["speaker"] == name for u in moves) for name in role_names},
        "silent_utterances": sum(is_silent_utterance(u) for u in moves),
        "fallbacks": len(state.get("fallbacks") or []),
        "stop_reason": state.get("stop_reason"),
    }


def score_node(role_names: Sequence[str], reward_fn: RewardFn | None) -> ScoreNode:
    def score(state: ConversationState) -> dict[str, Any]:
        metrics = conversation_metrics(state, role_names)
        if reward_fn is None:
            return {"metrics": metrics}
        result = reward_fn(state)
        outcome = result if isinstance(result, Outcome) else Outcome(rewards=result)
        return {
            "rewards": _checked_scores(outcome.rewards, role_names, "rewards"),
            "reward_dimensions": {
                role: _checked_scores(dims, None, f"reward_dimensions[{role!r}]")
                for role, dims in _checked_roles(outcome.reward_dimensions, role_names).items()
            },
            "metrics": {**metrics, **outcome.metrics},
            "turn_rewards": list(outcome.turn_rewards),
        }

    return score


def _checked_roles(mapping: object, role_names: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(mapping, Mapping):
        raise ValueError(f"reward_fn: expected a mapping keyed by role, got {type(mapping).__name__}")
    unknown = [key for key in mapping if key not in role_names]
    if unknown:
        raise ValueError(f"reward_fn returned scores for unknown roles {unknown}; roles: {list(role_names)}")
    return mapping


def _checked_scores(scores: object, role_names: Sequence[str] | None, what: str) -> dict[str, float]:
    """A name -> finite float mapping (keys checked against the roles when `role_names` is given)."""
    if role_names is not None:
        scores = _checked_roles(scores, role_names)
    if not isinstance(scores, Mapping):
        raise ValueError(
            f"reward_fn {what}: expected a mapping of name -> float, got {type(scores).__name__}"
        )
    checked: dict[str, float] = {}
    for key, value in scores.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"reward_fn {what}[{key!r}]: expected a finite number, got {value!r}")
        checked[str(key)] = float(value)
    return checked
