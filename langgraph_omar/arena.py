"""Seats of the built-in environments for arena evaluation, and what each game is scored on.

A seat is what the model under test takes in one game while the opponent plays everything else: a role in
negotiation ("buyer", "seller") and SOTOPIA ("agent_1", "agent_2"), a team in Werewolf ("Villagers",
"Werewolves": every player dealt a role of that team). An `Arena` says, for a scenario seed, which graph
role sits in which seat, builds the graph with one chat model per role, and reads a finished episode's
values per seat (compared between the two models) and per game (reported per seating, not compared).

Metric kinds: "outcome" values come from the game's rules (surplus share, wins, agreement); "judge" values
come from an LLM judge, which overrates trained models (SOTOPIA-pi), so reports put them beside outcomes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from langchain_core.language_models import BaseChatModel

from langgraph_omar.errors import OmarError
from langgraph_omar.trajectory import Episode

OUTCOME, JUDGE = "outcome", "judge"
DEFAULT_RECURSION_LIMIT = 500


class Arena(Protocol):
    name: str
    seats: tuple[str, ...]
    metric_kinds: dict[str, str]  # metric -> OUTCOME | JUDGE, outcome metrics first
    metric_help: dict[str, str]  # metric -> one line for the report
    rate_metrics: frozenset[str]  # metrics whose values are 0/1 outcomes (reported as rates)
    recursion_limit: int

    def seating(self, seed: int) -> dict[str, str]:
        """Graph role -> seat, for the scenario of `seed`."""
        ...

    def input(self, seed: int) -> dict[str, Any]: ...

    def graph(self, models: Mapping[str, BaseChatModel], judge: BaseChatModel, seed: int) -> Any: ...

    def seat_values(self, episode: Episode, seating: Mapping[str, str]) -> dict[str, dict[str, float]]:
        """Seat -> metric -> value; a seat missing a value (e.g. a failed judge call) leaves it out."""
        ...

    def game_values(self, episode: Episode) -> dict[str, float]: ...


def _metrics(episode: Episode) -> dict[str, Any]:
    return dict(episode.metadata.get("metrics") or {})


def _seat_rewards(episode: Episode, seating: Mapping[str, str]) -> dict[str, float]:
    """Seat -> mean terminal reward of its roles that have one."""
    by_seat: dict[str, list[float]] = {}
    for role, seat in seating.items():
        if role in episode.rewards:
            by_seat.setdefault(seat, []).append(episode.rewards[role])
    return {seat: sum(values) / len(values) for seat, values in by_seat.items()}


@dataclass
class NegotiationArena:
    """Seats: the scenario's two roles. Reward: the role's surplus share (rule-based)."""

    kind: str = "price"
    graph_options: dict[str, Any] = field(default_factory=dict)
    name: str = "negotiation"
    recursion_limit: int = DEFAULT_RECURSION_LIMIT
    rate_metrics: frozenset[str] = frozenset({"agreement"})
    metric_kinds: dict[str, str] = field(
        default_factory=lambda: {
            "reward": OUTCOME,
            "agreement": OUTCOME,
            "negotiation_turns": OUTCOME,
            "illegal_offers": OUTCOME,
            "parse_fallbacks": OUTCOME,
        }
    )
    metric_help: dict[str, str] = field(
        default_factory=lambda: {
            "reward": "surplus share: the part of the zone of agreement the seat won (0 with no deal)",
            "agreement": "the game ended in a deal",
            "negotiation_turns": "messages before the game ended",
            "illegal_offers": "offers outside the rules",
            "parse_fallbacks": "replies with no parsable action (treated as talk)",
        }
    )

    def __post_init__(self) -> None:
        from langgraph_omar.envs.negotiation_scenario import sample_scenario

        self.seats = tuple(sample_scenario(0, self.kind).roles)

    def seating(self, seed: int) -> dict[str, str]:
        return {role: role for role in self.seats}

    def input(self, seed: int) -> dict[str, Any]:
        from langgraph_omar.envs import negotiation

        return negotiation.sample_input(seed, self.kind)

    def graph(self, models: Mapping[str, BaseChatModel], judge: BaseChatModel, seed: int) -> Any:
        from langgraph_omar.envs import negotiation

        return negotiation.build_graph(models=models, kind=self.kind, **self.graph_options)

    def seat_values(self, episode: Episode, seating: Mapping[str, str]) -> dict[str, dict[str, float]]:
        return {seat: {"reward": value} for seat, value in _seat_rewards(episode, seating).items()}

    def game_values(self, episode: Episode) -> dict[str, float]:
        metrics = _metrics(episode)
        values = {"parse_fallbacks": float(len(episode.metadata.get("fallbacks") or []))}
        for name in ("agreement", "negotiation_turns", "illegal_offers"):
            if name in metrics:
                values[name] = float(metrics[name])
        return values


@dataclass
class SotopiaArena:
    """Seats: agent_1 and agent_2. Reward: the judge's goal score / 10 (a judge value)."""

    data_dir: str | None = None
    graph_options: dict[str, Any] = field(default_factory=dict)
    name: str = "sotopia"
    recursion_limit: int = DEFAULT_RECURSION_LIMIT
    rate_metrics: frozenset[str] = frozenset()
    metric_kinds: dict[str, str] = field(default_factory=lambda: {"turns": OUTCOME, "reward": JUDGE})
    metric_help: dict[str, str] = field(
        default_factory=lambda: {
            "turns": "turns before the episode ended (SOTOPIA has no rule-based outcome)",
            "reward": "judge: goal completion / 10",
            "judge_failures": "seats the judge could not score",
        }
    )

    def __post_init__(self) -> None:
        from langgraph_omar.envs.sotopia import ROLES
        from langgraph_omar.envs.sotopia_data import load_builtin_sotopia, load_sotopia

        self.seats = ROLES
        self.data = load_sotopia(self.data_dir) if self.data_dir else load_builtin_sotopia()
        from langgraph_omar.envs.judge import SOTOPIA_DIMENSIONS

        for dimension in SOTOPIA_DIMENSIONS:
            self.metric_kinds[f"judge_{dimension.name}"] = JUDGE
            self.metric_help[f"judge_{dimension.name}"] = f"judge: {dimension.instruction}"
        self.metric_kinds["judge_failures"] = OUTCOME

    def seating(self, seed: int) -> dict[str, str]:
        return {role: role for role in self.seats}

    def input(self, seed: int) -> dict[str, Any]:
        from langgraph_omar.envs import sotopia

        return sotopia.sample_input(seed, self.data)

    def graph(self, models: Mapping[str, BaseChatModel], judge: BaseChatModel, seed: int) -> Any:
        from langgraph_omar.envs import sotopia

        return sotopia.build_graph(model=judge, models=models, **self.graph_options)

    def seat_values(self, episode: Episode, seating: Mapping[str, str]) -> dict[str, dict[str, float]]:
        values: dict[str, dict[str, float]] = {}
        for seat, reward in _seat_rewards(episode, seating).items():
            values[seat] = {"reward": reward}
        for role, scores in episode.reward_dimensions.items():
            seat_scores = values.setdefault(seating.get(role, role), {})
            seat_scores.update({f"judge_{name}": float(score) for name, score in scores.items()})
        return values

    def game_values(self, episode: Episode) -> dict[str, float]:
        metrics = _metrics(episode)
        values = {"judge_failures": float(len(metrics.get("judge_failures") or []))}
        if "turns" in metrics:
            values["turns"] = float(metrics["turns"])
        return values


@dataclass
class WerewolfArena:
    """Seats: the two teams. Values: the team's win (0/1) and its players' mean reward (rule-based)."""

    config: str = "classic_6"
    rules: dict[str, Any] = field(default_factory=dict)
    name: str = "werewolf"
    rate_metrics: frozenset[str] = frozenset({"win", "draw"})
    metric_kinds: dict[str, str] = field(
        default_factory=lambda: {
            "win": OUTCOME,
            "reward": OUTCOME,
            "draw": OUTCOME,
            "rounds": OUTCOME,
            "vote_accuracy": OUTCOME,
            "fallbacks": OUTCOME,
        }
    )
    metric_help: dict[str, str] = field(
        default_factory=lambda: {
            "win": "the seat's team won",
            "reward": "the team's players' mean reward (win discounted for early elimination, loss -1)",
            "draw": "the round limit ended the game",
            "rounds": "rounds played",
            "vote_accuracy": "village-team votes cast against werewolves",
            "fallbacks": "unparsable or illegal moves replaced by a fallback",
        }
    )

    def __post_init__(self) -> None:
        from langgraph_omar.envs.werewolf_config import TEAMS, bundled_config_path, load_werewolf_config
        from langgraph_omar.envs.werewolf_graph import recursion_limit

        path = Path(self.config) if Path(self.config).suffix else bundled_config_path(self.config)
        self.game = load_werewolf_config(path, rules=self.rules or None)
        self.seats = TEAMS
        self.recursion_limit = max(DEFAULT_RECURSION_LIMIT, recursion_limit(self.game))

    def seating(self, seed: int) -> dict[str, str]:
        from langgraph_omar.envs.werewolf_config import team_of
        from langgraph_omar.envs.werewolf_rules import new_game

        return {player: team_of(role) for player, role in new_game(self.game, seed)["roles"].items()}

    def input(self, seed: int) -> dict[str, Any]:
        return {"seed": seed}

    def graph(self, models: Mapping[str, BaseChatModel], judge: BaseChatModel, seed: int) -> Any:
        from langgraph_omar.envs.werewolf_graph import build_graph

        return build_graph(model=models, config_path=self.game, seed=seed)

    def seat_values(self, episode: Episode, seating: Mapping[str, str]) -> dict[str, dict[str, float]]:
        values = {seat: {"reward": value} for seat, value in _seat_rewards(episode, seating).items()}
        won = _metrics(episode).get("win_rate") or {}
        for seat in self.seats:
            if seat in won:
                values.setdefault(seat, {})["win"] = float(won[seat])
        return values

    def game_values(self, episode: Episode) -> dict[str, float]:
        metrics = _metrics(episode)
        return {
            name: float(metrics[name])
            for name in ("draw", "rounds", "vote_accuracy", "fallbacks")
            if metrics.get(name) is not None
        }


def make_arena(env: str, **options: Any) -> Arena:
    """The arena of a built-in environment; options go to its constructor (e.g. kind="split")."""
    arenas: dict[str, type] = {
        "negotiation": NegotiationArena,
        "sotopia": SotopiaArena,
        "werewolf": WerewolfArena,
    }
    if env not in arenas:
        raise OmarError(f"unknown environment {env!r} for evaluation; expected one of {sorted(arenas)}")
    try:
        arena: Arena = arenas[env](**options)
    except TypeError as exc:
        raise OmarError(f"bad option for the {env} arena: {exc}") from None
    return arena
