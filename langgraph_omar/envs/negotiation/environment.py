"""The negotiation `Environment`: options, seats (the two roles) and outcome metrics."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from langchain_core.language_models import BaseChatModel

from langgraph_omar.envs.environment import Environment, Metric, option
from langgraph_omar.envs.negotiation import graph
from langgraph_omar.envs.negotiation.rules import NegotiationRules
from langgraph_omar.envs.negotiation.scenario import SCENARIO_KINDS, sample_scenario
from langgraph_omar.trajectory import Episode


@dataclass
class Negotiation(Environment):
    """Buyer/seller bargaining (kind price) or a Deal-or-No-Deal item split (kind split); rule-based rewards:
    each role's share of the zone of agreement it won, 0 with no deal."""

    name = "negotiation"
    description = "two roles bargain over a price or a split of items; rewards from the rules (no judge)"
    seat_metrics = {
        "reward": Metric("surplus share: the part of the zone of agreement the seat won (0 with no deal)")
    }
    game_metrics = {
        "agreement": Metric("the game ended in a deal", rate=True),
        "negotiation_turns": Metric("messages before the game ended"),
        "illegal_offers": Metric("offers outside the rules"),
        "parse_fallbacks": Metric("replies with no parsable action (treated as talk)"),
    }

    kind: str = option("price", f"scenario kind: {' | '.join(SCENARIO_KINDS)}")
    max_turns: int | None = option(None, "messages per episode, both roles together (default: 10)")
    behaviour_rewards: float = option(
        0.0,
        "size b of MARO's behaviour-level rewards: each move scored b x the change in the mover's achievable "
        "surplus share from this decision to its next (potential-based: they add up to b x the outcome, less "
        "what the other side first offered), as Turn.reward (mixed in by training's turn_reward_weight; 0 = none)",
    )
    constrained_actions: bool = option(
        False, "decode every reply under a grammar: one message line, then one legal action line"
    )

    def __post_init__(self) -> None:
        if self.kind not in SCENARIO_KINDS:
            raise ValueError(f"kind must be one of {list(SCENARIO_KINDS)}, got {self.kind!r}")
        if self.max_turns is not None and self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        self.rules  # noqa: B018  # validates behaviour_rewards up front

    @property
    def rules(self) -> NegotiationRules:
        rules = NegotiationRules(behaviour_rewards=self.behaviour_rewards)
        return rules if self.max_turns is None else replace(rules, max_turns=self.max_turns)

    def build_graph(self, model: BaseChatModel, *, judge: BaseChatModel | None = None) -> Any:
        return graph.build_graph(
            model=model, kind=self.kind, rules=self.rules, constrained_actions=self.constrained_actions
        )

    def sample_input(self, seed: int) -> dict[str, Any]:
        return graph.sample_input(seed, self.kind)

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(sample_scenario(0, self.kind).roles)

    def game_values(self, episode: Episode) -> dict[str, float]:
        values = super().game_values(episode)
        values["parse_fallbacks"] = float(len(episode.metadata.get("fallbacks") or []))
        return values
