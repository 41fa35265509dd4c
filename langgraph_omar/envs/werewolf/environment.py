"""The Werewolf `Environment`: the variant file, seats by team, win rates and vote metrics.

Roles are game roles (Villager, Werewolf, Seer, ...) and agents are players: every turn's agent is its player
and its role the player's game role; each player's turns train as one trajectory ending on the player's own
reward (`agent_rewards`), the final state's `rewards` give each game role its players' mean reward, and
`adapter_by_role` seats an adapter on every player dealt that role. An evaluation seat is a team: the tested
model plays every role of one team (so every player of it, however `shuffle_roles` deals the roles), the
opponent every role of the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel

from langgraph_omar.envs.environment import DEFAULT_RECURSION_LIMIT, Environment, Metric, option
from langgraph_omar.envs.werewolf.config import (
    BUNDLED_DIR,
    TEAMS,
    WerewolfConfig,
    bundled_config_path,
    load_werewolf_config,
    team_of,
)
from langgraph_omar.envs.werewolf.graph import build_graph, recursion_limit
from langgraph_omar.trajectory import Episode

BUNDLED = tuple(sorted(p.stem for p in BUNDLED_DIR.glob("*.json")))


@dataclass
class Werewolf(Environment):
    """The social-deduction game; roster, phases and rules from a config file. In an evaluation the seats
    are the two teams: the tested model plays every player dealt a role of one team."""

    name = "werewolf"
    description = "the social-deduction game (villagers against werewolves), roster and rules from a file"
    seat_metrics = {
        "win": Metric("the seat's team won", rate=True),
        "reward": Metric(
            "the mean over the team's game roles of their players' mean reward (win discounted for early "
            "elimination, loss -1)"
        ),
        "fallback_share": Metric(
            "the share of the team's moves (votes, kills, inspections, potions) that were unparsable or illegal "
            "and replaced by a fallback"
        ),
    }
    game_metrics = {
        "draw": Metric("the round limit ended the game", rate=True),
        "rounds": Metric("rounds played"),
        "vote_accuracy": Metric("village-team votes cast against werewolves"),
        "fallbacks": Metric("unparsable or illegal moves replaced by a fallback"),
    }

    werewolf_config: str = option(
        "classic_6", f"a bundled variant ({', '.join(BUNDLED)}) or a JSON/YAML file"
    )
    max_rounds: int | None = option(None, "round limit (default: the config's)")
    behaviour_rewards: float | None = option(
        None,
        "size b of MARO's behaviour-level rewards: each vote, kill, inspection, protection, save and poison "
        "scored +b/-b by its effect on the player's team, as Turn.reward (default: the config's "
        "rules.behaviour_rewards, 0 = none)",
    )
    constrained_moves: bool = option(
        False,
        "decode every move (vote, kill, inspection, potion, protection) under a grammar of the legal moves, so "
        "none falls back (ChatPolicy); speeches stay free",
    )
    game: WerewolfConfig = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_rounds is not None and self.max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {self.max_rounds}")
        name = self.werewolf_config
        path = bundled_config_path(name) if name in BUNDLED else Path(name)
        overrides = {"max_rounds": self.max_rounds, "behaviour_rewards": self.behaviour_rewards}
        rules = {key: value for key, value in overrides.items() if value is not None}
        self.game = load_werewolf_config(path, rules=rules)  # checked now, not at the first episode

    def build_graph(self, model: BaseChatModel, *, judge: BaseChatModel | None = None) -> Any:
        return build_graph(model=model, config_path=self.game, constrained_moves=self.constrained_moves)

    def sample_input(self, seed: int) -> dict[str, Any]:
        return {"seed": seed}  # the seed deals the roles and drives fallbacks and tie-breaks

    @property
    def roles(self) -> tuple[str, ...]:
        """The roster's game roles, in order of first seat."""
        return tuple(dict.fromkeys(self.game.roles[player] for player in self.game.players))

    @property
    def recursion_limit(self) -> int:
        return max(DEFAULT_RECURSION_LIMIT, recursion_limit(self.game))

    def seating(self, seed: int, roles: tuple[str, ...]) -> dict[str, str]:
        return {role: team_of(role) for role in roles}  # whoever the seed deals a role to plays for its team

    def seats(self, roles: tuple[str, ...]) -> tuple[str, ...]:
        return TEAMS

    def seat_values(self, episode: Episode, seating: Mapping[str, str]) -> dict[str, dict[str, float]]:
        values = super().seat_values(episode, seating)
        metrics = episode.metadata.get("metrics") or {}
        won = metrics.get("win_rate") or {}
        moves, fallbacks = metrics.get("moves_by_role") or {}, metrics.get("fallbacks_by_role") or {}
        for seat in TEAMS:
            if seat in won:
                values.setdefault(seat, {})["win"] = float(won[seat])
            roles = [role for role, role_seat in seating.items() if role_seat == seat]
            made = sum(moves.get(role, 0) for role in roles)
            if made:
                share = sum(fallbacks.get(role, 0) for role in roles) / made
                values.setdefault(seat, {})["fallback_share"] = share
        return values
