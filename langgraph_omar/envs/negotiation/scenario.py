"""Negotiation scenarios: a seeded generator of single-issue bargains and multi-issue item splits.

Two kinds share one interface (`NegotiationScenario`):
- `PriceScenario` (kind "price"): a buyer and a seller haggle over one item's price. The buyer has a private
  maximum, the seller a private minimum; most draws have a positive zone of agreement (buyer_max > seller_min).
- `SplitScenario` (kind "split"): two players divide a pool of items (books, hats, balls), each with private
  per-item values, as in Deal or No Deal (Lewis et al. 2017): every player's whole pool is worth the same total
  (10 points by default) and every item type is worth something to at least one player.

Scenarios are plain frozen dataclasses; `sample_scenario(seed)` gives the same scenario for the same seed on
every machine (it uses its own `random.Random(seed)`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

ScenarioKind = Literal["price", "split"]
SCENARIO_KINDS: tuple[str, ...] = ("price", "split")

# (item, typical list price): the generator scales these by a random factor.
_PRICE_ITEMS: tuple[tuple[str, int], ...] = (
    ("used bicycle", 220),
    ("acoustic guitar", 340),
    ("second-hand laptop", 600),
    ("leather sofa", 450),
    ("vintage camera", 180),
    ("mountain tent", 150),
    ("espresso machine", 260),
    ("electric scooter", 520),
)
_SPLIT_ITEMS: tuple[str, ...] = ("books", "hats", "balls")


@dataclass(frozen=True)
class ScenarioConfig:
    """How `sample_scenario` draws scenarios. Every field has help text in `metadata['help']`."""

    no_zone_probability: float = field(
        default=0.1,
        metadata={"help": "price kind: probability that buyer_max < seller_min (no deal is possible)"},
    )
    split_total_value: int = field(
        default=10, metadata={"help": "split kind: the value of the whole pool to each player"}
    )
    split_min_items: int = field(default=5, metadata={"help": "split kind: fewest items in the pool"})
    split_max_items: int = field(default=7, metadata={"help": "split kind: most items in the pool"})

    def __post_init__(self) -> None:
        if not 0.0 <= self.no_zone_probability <= 1.0:
            raise ValueError(
                f"ScenarioConfig.no_zone_probability must be in [0, 1], got {self.no_zone_probability}"
            )
        if self.split_total_value < 1:
            raise ValueError(f"ScenarioConfig.split_total_value must be >= 1, got {self.split_total_value}")
        n_types = len(_SPLIT_ITEMS)
        if not n_types <= self.split_min_items <= self.split_max_items <= 4 * n_types:
            raise ValueError(
                f"ScenarioConfig needs {n_types} <= split_min_items <= split_max_items <= {4 * n_types}, "
                f"got {self.split_min_items}, {self.split_max_items}"
            )


@dataclass(frozen=True)
class NegotiationScenario:
    """What every negotiation scenario has: an id, the seed it came from, and its two roles in turn order."""

    scenario_id: str
    seed: int
    roles: tuple[str, str]
    kind: ClassVar[ScenarioKind]

    def other(self, role: str) -> str:
        """The role on the other side of the table."""
        first, second = self.roles
        if role == first:
            return second
        if role == second:
            return first
        raise ValueError(f"unknown role {role!r}; this scenario's roles are {self.roles}")


@dataclass(frozen=True)
class PriceScenario(NegotiationScenario):
    """A buyer and a seller bargain over `item`. Prices are in whole currency units."""

    item: str = ""
    list_price: int = 0
    buyer_max: int = 0  # private to the buyer: the most it will pay
    seller_min: int = 0  # private to the seller: the least it will take
    roles: tuple[str, str] = ("buyer", "seller")
    kind: ClassVar[ScenarioKind] = "price"

    def __post_init__(self) -> None:
        if sorted(self.roles) != ["buyer", "seller"]:
            raise ValueError(
                f"PriceScenario.roles must be 'buyer' and 'seller' (either order), got {self.roles}"
            )

    @property
    def zone(self) -> int:
        """buyer_max - seller_min: positive when a deal can make both sides better off."""
        return self.buyer_max - self.seller_min


@dataclass(frozen=True)
class SplitScenario(NegotiationScenario):
    """Two players divide `counts[i]` units of `items[i]`; `values[role][i]` is one unit's worth to `role`."""

    items: tuple[str, ...] = _SPLIT_ITEMS
    counts: tuple[int, ...] = (1, 1, 1)
    values: dict[str, tuple[int, ...]] = field(default_factory=dict, hash=False)
    roles: tuple[str, str] = ("alice", "bob")
    kind: ClassVar[ScenarioKind] = "split"

    def __post_init__(self) -> None:
        if len(self.items) != len(self.counts) or any(c < 1 for c in self.counts):
            raise ValueError(
                f"SplitScenario needs one count >= 1 per item, got {self.items} and {self.counts}"
            )
        if sorted(self.values) != sorted(self.roles) or any(
            len(v) != len(self.items) for v in self.values.values()
        ):
            raise ValueError(f"SplitScenario.values needs one value per item for each of {self.roles}")
        if any(self.max_value(role) <= 0 for role in self.roles):
            raise ValueError("SplitScenario: every role must value the whole pool above 0")

    def max_value(self, role: str) -> int:
        """The value of the whole pool to `role` (what it would get by taking everything)."""
        return sum(c * v for c, v in zip(self.counts, self.values[role], strict=True))


def sample_scenario(
    seed: int, kind: str = "price", config: ScenarioConfig | None = None
) -> NegotiationScenario:
    """The scenario of kind `kind` ("price" or "split") for `seed`; deterministic across runs and machines."""
    config = config or ScenarioConfig()
    rng = random.Random(f"negotiation/{kind}/{seed}")
    if kind == "price":
        return _sample_price(seed, rng, config)
    if kind == "split":
        return _sample_split(seed, rng, config)
    raise ValueError(f"unknown negotiation scenario kind {kind!r}; expected one of {SCENARIO_KINDS}")


def _sample_price(seed: int, rng: random.Random, config: ScenarioConfig) -> PriceScenario:
    item, typical = rng.choice(_PRICE_ITEMS)
    list_price = max(20, round(typical * rng.uniform(0.8, 1.2)))
    seller_min = round(list_price * rng.uniform(0.55, 0.8))
    # The zone width is 10-35% of the list price; never zero, so the surplus share is always defined.
    width = max(2, round(list_price * rng.uniform(0.1, 0.35)))
    if rng.random() < config.no_zone_probability:
        buyer_max = seller_min - width // 2 - 1
    else:
        buyer_max = seller_min + width
    return PriceScenario(
        scenario_id=f"price-{seed}",
        seed=seed,
        item=item,
        list_price=list_price,
        buyer_max=buyer_max,
        seller_min=seller_min,
    )


def _sample_split(seed: int, rng: random.Random, config: ScenarioConfig) -> SplitScenario:
    n_types = len(_SPLIT_ITEMS)
    total_items = rng.randint(config.split_min_items, config.split_max_items)
    counts = [1] * n_types
    for _ in range(total_items - n_types):
        candidates = [i for i in range(n_types) if counts[i] < 4]
        counts[rng.choice(candidates)] += 1
    roles = ("alice", "bob")
    while True:
        values = {role: _values_summing_to(counts, config.split_total_value, rng) for role in roles}
        # Every item type must matter to someone, or that item is not worth negotiating over.
        if all(values["alice"][i] + values["bob"][i] > 0 for i in range(n_types)):
            break
    return SplitScenario(
        scenario_id=f"split-{seed}",
        seed=seed,
        items=_SPLIT_ITEMS,
        counts=tuple(counts),
        values=values,
        roles=roles,
    )


def _values_summing_to(counts: list[int], total: int, rng: random.Random) -> tuple[int, ...]:
    """Non-negative integer unit values v with sum(counts[i] * v[i]) == total (rejection sampling)."""
    n = len(counts)
    while True:
        values = [rng.randint(0, total // counts[i]) for i in range(n - 1)]
        rest = total - sum(c * v for c, v in zip(counts, values, strict=False))
        if rest >= 0 and rest % counts[-1] == 0:
            return (*values, rest // counts[-1])


def scenario_to_dict(scenario: NegotiationScenario) -> dict[str, Any]:
    """A JSON-compatible dict with a `kind` key; `scenario_from_dict` inverts it."""
    data = {"kind": scenario.kind, **asdict(scenario)}
    data["roles"] = list(scenario.roles)
    if isinstance(scenario, SplitScenario):
        data["items"], data["counts"] = list(scenario.items), list(scenario.counts)
        data["values"] = {role: list(values) for role, values in scenario.values.items()}
    return data


def scenario_from_dict(data: Mapping[str, Any]) -> NegotiationScenario:
    """The scenario `scenario_to_dict` wrote; a ValueError naming the key when one is missing or wrong."""
    try:
        kind = data["kind"]
        scenario_id, seed = str(data["scenario_id"]), int(data["seed"])
        first, second = data["roles"]
        roles = (str(first), str(second))
        if kind == "price":
            return PriceScenario(
                scenario_id,
                seed,
                roles,
                item=str(data["item"]),
                list_price=int(data["list_price"]),
                buyer_max=int(data["buyer_max"]),
                seller_min=int(data["seller_min"]),
            )
        if kind == "split":
            return SplitScenario(
                scenario_id,
                seed,
                roles,
                items=tuple(data["items"]),
                counts=tuple(int(c) for c in data["counts"]),
                values={role: tuple(int(v) for v in values) for role, values in data["values"].items()},
            )
    except KeyError as error:
        raise ValueError(f"negotiation scenario: key {error.args[0]!r} is missing") from None
    except (TypeError, ValueError, AttributeError) as error:
        raise ValueError(f"negotiation scenario: malformed value ({error})") from None
    raise ValueError(f"negotiation scenario: key 'kind' must be one of {SCENARIO_KINDS}, got {kind!r}")
