"""The negotiation game's rules, rewards and metrics, as pure functions over frozen states.

Rules (one `step` per message, the two roles alternating):
- `offer` puts the speaker's offer on the table, replacing any standing offer. An offer that no agreement could
  honour (a price that is not positive; a split that keeps more units than exist) is recorded as illegal.
- `accept` agrees to the other side's standing offer and ends the game: a deal when that offer is legal,
  no deal (`illegal_agreement`) when it is not. Accepting when the other side has no offer on the table (no
  offer yet, a rejected one, or only one's own) ends with no deal (`accept_without_offer`) by default, or with
  `accept_without_offer="ignore"` is recorded as a fallback and treated as talk.
- `reject` takes the other side's standing offer off the table. `walk_away` ends the game with no deal.
- `talk` (no action found) changes nothing; the parser's fallback reason is recorded.
- After `max_turns` messages without an end, the game ends with no deal (`turn_limit`).

Rewards (`episode_rewards`):
- Price kind, a deal at price p: with zone = buyer_max - seller_min and scale = max(|zone|, 1),
  seller = (p - seller_min) / scale and buyer = (buyer_max - p) / scale, each clipped to `reward_clip`.
  With a positive zone these are the surplus shares (seller + buyer = 1 inside the zone); with no zone every
  deal is worse than none for at least one side (the shares sum to -1).
- Split kind, a deal: each side's value obtained / the value of the whole pool to it (in [0, 1]).
- No deal, for any reason: `no_deal_reward` to both (default 0).

Behaviour-level rewards (MARO; `move_rewards`, off unless `behaviour_rewards` = b > 0), potential-based: the
potential Phi of a role is its `achievable_share` (during the game, its share of the offer on the table were it
agreed, clamped to [no_deal_reward, 1]; at the end, its reward), and a move gets b x (Phi at its mover's next
decision - Phi at this one), so the other side's reply in between is charged to it. A role's rewards add up to
b x (its reward - Phi at its first decision): an ask the other side never takes earns nothing, and no game
without a deal scores above the deal its mover could have accepted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from langgraph_omar.envs.negotiation.actions import NegotiationAction, parse_action
from langgraph_omar.envs.negotiation.scenario import NegotiationScenario, PriceScenario, SplitScenario

Outcome = Literal[
    "in_progress", "agreement", "walk_away", "turn_limit", "accept_without_offer", "illegal_agreement"
]


@dataclass(frozen=True)
class NegotiationRules:
    """Configurable rules. Every field has help text in `metadata['help']`."""

    max_turns: int = field(
        default=10, metadata={"help": "messages in total (both roles) before the game ends with no deal"}
    )
    no_deal_reward: float = field(
        default=0.0, metadata={"help": "reward to both roles when there is no deal"}
    )
    reward_clip: tuple[float, float] = field(
        default=(-1.0, 2.0), metadata={"help": "price kind: (low, high) bounds of each side's surplus share"}
    )
    accept_without_offer: Literal["no_deal", "ignore"] = field(
        default="no_deal",
        metadata={
            "help": "an ACCEPT with no offer from the other side: 'no_deal' ends the game, 'ignore' is talk"
        },
    )

    behaviour_rewards: float = field(
        default=0.0,
        metadata={
            "help": "size b of MARO's behaviour-level rewards: each move gets b times the change in its "
            "mover's achievable surplus share from this decision to its next (potential-based), as Turn.reward "
            "(0: none)"
        },
    )

    def __post_init__(self) -> None:
        if self.max_turns < 1:
            raise ValueError(f"NegotiationRules.max_turns must be >= 1, got {self.max_turns}")
        if not (math.isfinite(self.behaviour_rewards) and self.behaviour_rewards >= 0):
            raise ValueError(
                f"NegotiationRules.behaviour_rewards must be a number >= 0, got {self.behaviour_rewards}"
            )
        low, high = self.reward_clip
        if not low < high:
            raise ValueError(
                f"NegotiationRules.reward_clip must be (low, high) with low < high, got {self.reward_clip}"
            )
        if self.accept_without_offer not in ("no_deal", "ignore"):
            raise ValueError(
                "NegotiationRules.accept_without_offer must be 'no_deal' or 'ignore', "
                f"got {self.accept_without_offer!r}"
            )


@dataclass(frozen=True)
class Offer:
    """An offer on the table: by `role`, either a `price` or a `split` (units `role` keeps, item order)."""

    role: str
    price: float | None = None
    split: tuple[int, ...] | None = None
    legal: bool = True


@dataclass(frozen=True)
class Fallback:
    """A message whose action could not be used as written, and why."""

    turn: int
    role: str
    reason: str


@dataclass(frozen=True)
class NegotiationState:
    """The game after `turns` messages. `deal` is the accepted offer when `outcome == "agreement"`."""

    turns: int = 0
    offer: Offer | None = None
    outcome: Outcome = "in_progress"
    deal: Offer | None = None
    illegal_offers: int = 0
    fallbacks: tuple[Fallback, ...] = ()

    @property
    def finished(self) -> bool:
        return self.outcome != "in_progress"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (for graph state and checkpoints); `from_dict` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NegotiationState:
        def offer(raw: Mapping[str, Any] | None) -> Offer | None:
            if raw is None:
                return None
            split = raw.get("split")
            return Offer(
                raw["role"], raw.get("price"), tuple(split) if split is not None else None, raw["legal"]
            )

        return cls(
            turns=int(data["turns"]),
            offer=offer(data.get("offer")),
            outcome=data["outcome"],
            deal=offer(data.get("deal")),
            illegal_offers=int(data.get("illegal_offers", 0)),
            fallbacks=tuple(Fallback(**f) for f in data.get("fallbacks", ())),
        )


def step(
    scenario: NegotiationScenario,
    state: NegotiationState,
    role: str,
    action: NegotiationAction,
    rules: NegotiationRules,
) -> NegotiationState:
    """The state after `role`'s message whose parsed action is `action`. Raises if the game is already over."""
    if state.finished:
        raise ValueError(f"the negotiation is over ({state.outcome}); no further moves are allowed")
    other = scenario.other(role)
    turn = state.turns + 1
    state = replace(state, turns=turn)
    if action.fallback is not None:
        state = _with_fallback(state, turn, role, action.fallback)

    if action.type == "offer":
        offer = Offer(role, action.price, action.split, legal=_is_legal(scenario, action))
        state = replace(state, offer=offer, illegal_offers=state.illegal_offers + (not offer.legal))
    elif action.type == "accept":
        standing = state.offer if state.offer is not None and state.offer.role == other else None
        if standing is None:
            if rules.accept_without_offer == "no_deal":
                return replace(state, outcome="accept_without_offer")
            state = _with_fallback(state, turn, role, "accept_without_offer")
        elif standing.legal:
            return replace(state, outcome="agreement", deal=standing)
        else:
            return replace(state, outcome="illegal_agreement")
    elif action.type == "reject":
        if state.offer is not None and state.offer.role == other:
            state = replace(state, offer=None)
    elif action.type == "walk_away":
        return replace(state, outcome="walk_away")

    if turn >= rules.max_turns:
        return replace(state, outcome="turn_limit")
    return state


def _with_fallback(state: NegotiationState, turn: int, role: str, reason: str) -> NegotiationState:
    return replace(state, fallbacks=(*state.fallbacks, Fallback(turn, role, reason)))


def _is_legal(scenario: NegotiationScenario, action: NegotiationAction) -> bool:
    if isinstance(scenario, PriceScenario):
        return action.price is not None and math.isfinite(action.price) and action.price > 0
    if isinstance(scenario, SplitScenario):
        return (
            action.split is not None
            and len(action.split) == len(scenario.counts)
            and all(0 <= keep <= count for keep, count in zip(action.split, scenario.counts, strict=True))
        )
    raise TypeError(f"unsupported scenario type {type(scenario).__name__}")


def episode_rewards(
    scenario: NegotiationScenario, state: NegotiationState, rules: NegotiationRules
) -> dict[str, float]:
    """Each role's reward for the finished game `state` (see the module docstring for the formulas)."""
    deal = state.deal
    if state.outcome != "agreement" or deal is None:
        return dict.fromkeys(scenario.roles, rules.no_deal_reward)
    return offer_shares(scenario, deal, rules)


def offer_shares(scenario: NegotiationScenario, offer: Offer, rules: NegotiationRules) -> dict[str, float]:
    """Each role's reward if the legal `offer` were agreed."""
    if isinstance(scenario, PriceScenario) and offer.price is not None:
        return price_shares(scenario, offer.price, rules.reward_clip)
    if isinstance(scenario, SplitScenario) and offer.split is not None:
        return split_shares(scenario, offer.role, offer.split)
    raise TypeError(f"an offer {offer} does not fit a {type(scenario).__name__}")


def achievable_share(
    scenario: NegotiationScenario, state: NegotiationState, role: str, rules: NegotiationRules
) -> float:
    """What `role` holds in `state`: its reward once the game is over; during it, its share of the legal offer on
    the table were it agreed, clamped to [no_deal_reward, 1] (walking away is always open, and no offer wins more
    than the whole zone), or `no_deal_reward` with no legal offer on the table."""
    if state.finished:
        return episode_rewards(scenario, state, rules)[role]
    if state.offer is None or not state.offer.legal:
        return rules.no_deal_reward
    return min(1.0, max(rules.no_deal_reward, offer_shares(scenario, state.offer, rules)[role]))


def move_rewards(
    scenario: NegotiationScenario, moves: Sequence[tuple[str, NegotiationAction]], rules: NegotiationRules
) -> list[float]:
    """The behaviour-level reward of each (role, action) move in order, potential-based: `rules.behaviour_rewards`
    times Phi(s') - Phi(s), where Phi is the mover's `achievable_share`, s the state in which it chose this move
    and s' the state of its next decision (after the other side's reply), or the last state when it has none.
    A role's rewards telescope to b x (Phi at the end - Phi at its first decision), so stalling cannot earn what
    a deal would; moves after the game ended get 0."""
    state, rewards = NegotiationState(), [0.0] * len(moves)
    pending: dict[
        str, tuple[int, float]
    ] = {}  # role -> (its last move's index, Phi where it chose that move)
    for index, (role, action) in enumerate(moves):
        if state.finished:
            break
        potential = achievable_share(scenario, state, role, rules)
        if role in pending:
            last, before = pending[role]
            rewards[last] = rules.behaviour_rewards * (potential - before)
        pending[role] = (index, potential)
        state = step(scenario, state, role, action, rules)
    for role, (last, before) in pending.items():
        rewards[last] = rules.behaviour_rewards * (achievable_share(scenario, state, role, rules) - before)
    return rewards


def price_shares(
    scenario: PriceScenario, price: float, clip: tuple[float, float] = (-1.0, 2.0)
) -> dict[str, float]:
    """Surplus shares of a deal at `price`: {"seller": (p - min)/scale, "buyer": (max - p)/scale}, clipped."""
    scale = max(abs(scenario.zone), 1)
    low, high = clip
    seller = min(high, max(low, (price - scenario.seller_min) / scale))
    buyer = min(high, max(low, (scenario.buyer_max - price) / scale))
    return {"buyer": buyer, "seller": seller}


def split_shares(scenario: SplitScenario, proposer: str, keep: Sequence[int]) -> dict[str, float]:
    """Value obtained / value of the whole pool, for a split where `proposer` keeps `keep` and the other the rest."""
    receiver = scenario.other(proposer)
    gets = {proposer: list(keep), receiver: [c - k for c, k in zip(scenario.counts, keep, strict=True)]}
    return {
        role: sum(n * v for n, v in zip(gets[role], scenario.values[role], strict=True))
        / scenario.max_value(role)
        for role in scenario.roles
    }


@dataclass(frozen=True)
class NegotiationResult:
    """The summary of one finished episode that the metrics read."""

    outcome: str
    turns: int
    rewards: dict[str, float]
    fallbacks: int = 0

    @property
    def agreement(self) -> bool:
        return self.outcome == "agreement"


def negotiation_metrics(results: Sequence[NegotiationResult]) -> dict[str, float]:
    """Agreement rate, turns to agreement, mean surplus share per role (over deals) and mean reward per role.

    Means over an empty set are NaN (e.g. `turns_to_agreement` when no episode reached a deal).
    """
    deals = [r for r in results if r.agreement]
    roles = sorted({role for r in results for role in r.rewards})
    metrics: dict[str, float] = {
        "episodes": float(len(results)),
        "agreement_rate": _mean([float(r.agreement) for r in results]),
        "turns_to_agreement": _mean([float(r.turns) for r in deals]),
        "fallbacks_per_episode": _mean([float(r.fallbacks) for r in results]),
    }
    for role in roles:
        metrics[f"surplus_share/{role}"] = _mean([r.rewards[role] for r in deals if role in r.rewards])
        metrics[f"reward/{role}"] = _mean([r.rewards[role] for r in results if role in r.rewards])
    return metrics


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def parse_for(scenario: NegotiationScenario, text: str) -> NegotiationAction:
    """`text`'s action, read for this scenario's kind (prices, or splits of its items)."""
    return parse_action(text, scenario.items if isinstance(scenario, SplitScenario) else None)


def replay(
    scenario: NegotiationScenario, messages: Iterable[tuple[str, str]], rules: NegotiationRules
) -> NegotiationState:
    """The state after the (role, text) messages in order; messages after the game ended are ignored."""
    state = NegotiationState()
    for role, text in messages:
        if state.finished:
            break
        state = step(scenario, state, role, parse_for(scenario, text), rules)
    return state


def result_of(
    scenario: NegotiationScenario, state: NegotiationState, rules: NegotiationRules
) -> NegotiationResult:
    """The summary the metrics read, for a finished game."""
    return NegotiationResult(
        state.outcome, state.turns, episode_rewards(scenario, state, rules), len(state.fallbacks)
    )
