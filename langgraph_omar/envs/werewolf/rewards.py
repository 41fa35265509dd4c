"""Werewolf outcome rewards and game metrics (pure functions over a finished state).

Reward of each player (team outcome, discounted for early elimination):
    draw (max_rounds hit)         -> draw_reward                                    (default 0)
    player's team lost            -> loss_reward                                    (default -1)
    player's team won             -> win_reward * factor(n)                         (default +1)
with n = final round - round of the player's elimination (0 for survivors) and
    factor(n) = d**n (exponential, default d = 0.9), max(0, 1 - (1 - d) * n) (linear), or 1 (none).
Example: a villager killed on night 1 of a game the village wins in round 3 missed n = 2 rounds: 0.9**2 = 0.81.
The discount applies to wins only: scaling a negative loss reward by d**n would make dying early *less* bad,
so a loser gets the full loss reward whenever they were eliminated.

Each player is an agent of its game role (a turn's agent is the player, its role the player's role: Villager,
Werewolf, Seer, ...). The final state's `agent_rewards` hold each player's reward, on which that player's turn
chain ends; `rewards` are per game role, the mean reward of the role's players (two villagers, one killed on
night 1 of a 3-round win: (0.81 + 1) / 2 = 0.905), which evaluation seats and per-role metrics read. With
`rules.behaviour_rewards`, `turn_rewards` scores each decision (see `werewolf.behaviour`).

Metrics: win rate per team (1/0 for one game; `aggregate_metrics` pools many), seer accuracy (inspections that
hit a werewolf / inspections made), vote accuracy (votes cast by village-team players against werewolves / votes
they cast; abstentions excluded, fallback votes included since they were cast), and fallback counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from langgraph_omar.conversation.calls import turn_reward
from langgraph_omar.envs.werewolf import actions as act
from langgraph_omar.envs.werewolf.behaviour import behaviour_scores
from langgraph_omar.envs.werewolf.config import (
    TEAMS,
    VILLAGERS_TEAM,
    WEREWOLF,
    WerewolfConfig,
    WerewolfRules,
    team_of,
)
from langgraph_omar.envs.werewolf.state import Elimination, WerewolfState


def elimination_factor(rounds_missed: int, discount: float, scheme: str) -> float:
    """Multiplier of a winner's reward after missing `rounds_missed` rounds (see the module docstring)."""
    if scheme == "exponential":
        return float(discount**rounds_missed)
    if scheme == "linear":
        return max(0.0, 1.0 - (1.0 - discount) * rounds_missed)
    return 1.0


def player_rewards(
    roles: Mapping[str, str],
    eliminated: Mapping[str, Elimination],
    winner: str | None,
    final_round: int,
    rules: WerewolfRules,
) -> dict[str, float]:
    """player -> terminal reward."""
    rewards: dict[str, float] = {}
    for player, role in roles.items():
        if winner is None:
            rewards[player] = float(rules.draw_reward)
        elif team_of(role) != winner:
            rewards[player] = float(rules.loss_reward)
        else:
            missed = final_round - eliminated[player]["round"] if player in eliminated else 0
            factor = elimination_factor(missed, rules.elimination_discount, rules.discount_scheme)
            rewards[player] = float(rules.win_reward) * factor
    return rewards


def role_rewards(roles: Mapping[str, str], rewards: Mapping[str, float]) -> dict[str, float]:
    """game role -> the mean reward of its players (`rewards`: player -> reward), in order of first seat."""
    by_role: dict[str, list[float]] = {}
    for player, role in roles.items():
        by_role.setdefault(role, []).append(rewards[player])
    return {role: sum(values) / len(values) for role, values in by_role.items()}


def _ratio(hits: int, total: int) -> float | None:
    return hits / total if total else None


def game_metrics(state: WerewolfState) -> dict[str, Any]:
    """Metrics of one finished game."""
    roles, actions, winner = state["roles"], state.get("actions", []), state.get("winner")
    inspections = [a for a in actions if a["verb"] == act.INSPECT and a["target"]]
    seer_hits = sum(roles[a["target"]] == WEREWOLF for a in inspections)  # type: ignore[index]
    votes = [
        a
        for a in actions
        if a["verb"] == act.VOTE and a["target"] and team_of(roles[a["player"]]) == VILLAGERS_TEAM
    ]
    vote_hits = sum(roles[a["target"]] == WEREWOLF for a in votes)  # type: ignore[index]
    fallbacks = state.get("fallbacks", [])
    # every game role, 0 included: a mean over games is per game
    none_yet = {role: 0 for role in roles.values()}
    by_role = none_yet | dict(Counter(f["role"] for f in fallbacks))
    moves_by_role = none_yet | dict(
        Counter(roles[a["player"]] for a in actions if a["kind"] not in act.CHAT_KINDS)
    )
    return {
        "winner": winner if winner is not None else "draw",
        "rounds": state.get("round", 0),
        "win_rate": {team: float(winner == team) for team in TEAMS},
        "draw": winner is None,
        "seer_inspections": len(inspections),
        "seer_hits": seer_hits,
        "seer_accuracy": _ratio(seer_hits, len(inspections)),
        "villager_votes": len(votes),
        "villager_votes_on_werewolves": vote_hits,
        "vote_accuracy": _ratio(vote_hits, len(votes)),
        "decisions": len(actions),
        "fallbacks": len(fallbacks),
        "moves_by_role": moves_by_role,  # the decisions that can fall back: all but speeches and wolf chat
        "fallbacks_by_role": by_role,
    }


def aggregate_metrics(games: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pool the `game_metrics` of many games: rates over games, accuracies over all inspections and votes."""
    count = len(games)
    inspections = sum(g["seer_inspections"] for g in games)
    votes = sum(g["villager_votes"] for g in games)
    fallbacks = sum(g["fallbacks"] for g in games)
    return {
        "games": count,
        "win_rate": {team: _ratio(sum(int(g["winner"] == team) for g in games), count) for team in TEAMS},
        "draw_rate": _ratio(sum(int(g["draw"]) for g in games), count),
        "seer_accuracy": _ratio(sum(g["seer_hits"] for g in games), inspections),
        "vote_accuracy": _ratio(sum(g["villager_votes_on_werewolves"] for g in games), votes),
        "fallbacks": fallbacks,
        "fallback_rate": _ratio(fallbacks, sum(g["decisions"] for g in games)),
    }


def finish(state: WerewolfState, config: WerewolfConfig) -> dict[str, Any]:
    """The game's closing update: rewards per game role and per player, the metrics, and the behaviour-level
    rewards of the model calls (when the rules ask for them)."""
    rewards = player_rewards(
        state["roles"], state.get("eliminated", {}), state.get("winner"), state.get("round", 0), config.rules
    )
    size = config.rules.behaviour_rewards
    scored = behaviour_scores(state) if size else []
    return {
        "phase": "end",
        "finished": True,
        "current": None,
        "rewards": role_rewards(state["roles"], rewards),
        "agent_rewards": rewards,
        "turn_rewards": [
            turn_reward(action["call_id"], size * score, why)
            for action, score, why in scored
            if "call_id" in action
        ],
        "metrics": game_metrics(state),
    }
