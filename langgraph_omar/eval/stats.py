"""The statistics of arena evaluation: confidence intervals and seat-by-seat paired comparisons.

Intervals: Student t for means and paired differences, Wilson score for rates (0/1 outcomes). No scipy: the
t quantile inverts the exact Student t distribution function for integer degrees of freedom (Abramowitz &
Stegun 26.7.3-4) by bisection.

Comparisons (`compare_seats`), per seat and metric: the tested model's mean where it sat in that seat, the
opponent's mean where it sat there, and the paired difference d(s) = tested(s) - opponent(s) over the
scenario seeds s that have both games, with a t interval over seeds (seeds are the independent units;
pairing removes the scenario's own difficulty). With more than two seats, opponent(s) is the mean over the
games of seed s where the opponent held the seat. Seat ALL_SEATS: per seed, the mean over seats of d(s),
over the seeds where every seat is paired.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

from langgraph_omar.envs.environment import JUDGE, OUTCOME

ALL_SEATS = "all"
_NORMAL_BEYOND_DF = 1000  # t quantiles beyond this many degrees of freedom differ from normal ones by < 1e-3


@dataclass(frozen=True)
class Interval:
    """A mean (or rate) with its confidence interval [low, high] over `n` observations.

    method: "t" (Student t interval of a mean), "wilson" (Wilson score interval of a proportion) or
    "none" (a single observation or no spread: low == high == mean, no interval can be estimated).
    """

    mean: float
    low: float
    high: float
    n: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self, digits: int = 3) -> str:
        if self.method == "none":
            return f"{self.mean:.{digits}f} (n={self.n}, no interval)"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}] (n={self.n})"


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def t_central_mass(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with `df` (integer >= 1) degrees of freedom and t >= 0."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    term, total = 1.0, 1.0
    if df % 2 == 0:  # sin(theta) * sum_{k<df/2} prod_{j<=k} (2j-1)/(2j) cos^2k
        for k in range(1, df // 2):
            term *= cos2 * (2 * k - 1) / (2 * k)
            total += term
        return math.sin(theta) * total
    if df == 1:
        return 2 * theta / math.pi
    for k in range(1, (df - 1) // 2):  # odd: 2/pi (theta + sin cos sum_{k<(df-1)/2} prod (2j)/(2j+1) cos^2k)
        term *= cos2 * (2 * k) / (2 * k + 1)
        total += term
    return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)


def t_quantile(confidence: float, df: int) -> float:
    """The t with P(|T| < t) = confidence, e.g. t_quantile(0.95, 10) = 2.228 (the 97.5% point)."""
    _check_confidence(confidence)
    if df > _NORMAL_BEYOND_DF:
        return NormalDist().inv_cdf(0.5 + confidence / 2)
    low, high = 0.0, 1.0
    while t_central_mass(high, df) < confidence:
        low, high = high, high * 2
    for _ in range(100):
        middle = (low + high) / 2
        if t_central_mass(middle, df) < confidence:
            low = middle
        else:
            high = middle
        if high - low < 1e-10:
            break
    return (low + high) / 2


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval | None:
    """Mean +- t * s / sqrt(n) (s: sample standard deviation); None for no values."""
    _check_confidence(confidence)
    n = len(values)
    if n == 0:
        return None
    mean = math.fsum(values) / n
    if n == 1:
        return Interval(mean, mean, mean, 1, "none")
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    half = t_quantile(confidence, n - 1) * math.sqrt(variance / n)
    return Interval(mean, mean - half, mean + half, n, "t")


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> Interval | None:
    """The Wilson score interval of a proportion successes / n; None when n == 0.

    Unlike mean +- t * se it stays inside [0, 1] and is not empty when every trial has the same result.
    """
    _check_confidence(confidence)
    if n == 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], got {successes}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    rate = successes / n
    denominator = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denominator
    return Interval(rate, max(0.0, centre - half), min(1.0, centre + half), n, "wilson")


def summarize(values: Sequence[float], rate: bool, confidence: float = 0.95) -> Interval | None:
    """A rate (0/1 outcomes: a Wilson interval) or a mean (a t interval) of `values`; None for no values."""
    if not rate:
        return mean_interval(values, confidence)
    odd = [v for v in values if v not in (0.0, 1.0)]
    if odd:
        raise ValueError(f"a rate needs 0/1 values, got {odd[0]!r}")
    return wilson_interval(sum(values), len(values), confidence)


# ---- comparisons over games ---------------------------------------------------------------------------------


@dataclass
class Game:
    """One played game: who sat where and what it scored."""

    seed: int
    tested_seat: str
    episode_id: str
    sides: dict[str, str]  # graph role -> TESTED | OPPONENT
    seating: dict[str, str]  # graph role -> seat
    status: str = "ok"
    error: str | None = None
    seat_values: dict[str, dict[str, float]] = field(default_factory=dict)  # seat -> metric -> value
    game_values: dict[str, float] = field(default_factory=dict)


@dataclass
class Comparison:
    """One metric in one seat (or ALL_SEATS): each side's mean and the paired difference tested - opponent."""

    metric: str
    kind: str  # OUTCOME | JUDGE
    seat: str
    tested: Interval | None
    opponent: Interval | None
    difference: Interval | None
    pairs: int


@dataclass
class GameMetric:
    """A per-game metric (not attributable to one side) over the games where the tested model sat in `seat`."""

    metric: str
    kind: str
    seat: str
    value: Interval | None


def _metric_order(metric_kinds: Mapping[str, str], names: set[str]) -> list[str]:
    """Outcome metrics first, then judge metrics; unknown names last (as outcome), each group in order."""
    known = [m for m in metric_kinds if m in names]
    ranked = [m for m in known if metric_kinds[m] == OUTCOME] + [m for m in known if metric_kinds[m] == JUDGE]
    return ranked + sorted(names - set(known))


def _seat_values(
    games: Sequence[Game], seat: str, metric: str
) -> tuple[dict[int, float], dict[int, list[float]]]:
    """`metric` in `seat` by scenario seed: the tested model's value, and the opponent's values there."""
    tested: dict[int, float] = {}
    opponent: dict[int, list[float]] = {}
    for game in games:
        value = game.seat_values.get(seat, {}).get(metric)
        if game.status != "ok" or value is None or not math.isfinite(value):
            continue
        if game.tested_seat == seat:
            tested[game.seed] = value
        else:
            opponent.setdefault(game.seed, []).append(value)
    return tested, opponent


def _differences(tested: Mapping[int, float], opponent: Mapping[int, list[float]]) -> dict[int, float]:
    return {s: tested[s] - sum(opponent[s]) / len(opponent[s]) for s in sorted(tested) if s in opponent}


def mean_by_seed(tables: Collection[Mapping[int, float]]) -> dict[int, float]:
    """Per seed that every table has: the mean of the tables' values (seeds in order)."""
    common = set.intersection(*(set(t) for t in tables)) if tables else set()
    return {s: sum(t[s] for t in tables) / len(tables) for s in sorted(common)}


def paired_differences(games: Sequence[Game], seats: Sequence[str], metric: str) -> dict[int, float]:
    """Seat ALL_SEATS's d(s) by scenario seed: the mean over seats of tested - opponent, for the seeds where
    every seat is paired (what two evaluations on the same seeds compare seed by seed)."""
    return mean_by_seed([_differences(*_seat_values(games, seat, metric)) for seat in seats])


def compare_seats(
    games: Sequence[Game],
    seats: Sequence[str],
    metric_kinds: Mapping[str, str],
    rates: Collection[str] = (),
    confidence: float = 0.95,
) -> list[Comparison]:
    """Per metric: one Comparison per seat, then one over ALL_SEATS (see the module docstring)."""
    names = {m for g in games if g.status == "ok" for values in g.seat_values.values() for m in values}
    comparisons = []
    for metric in _metric_order(metric_kinds, names):
        kind = metric_kinds.get(metric, OUTCOME)
        rate = metric in rates
        per_seat_diffs: dict[str, dict[int, float]] = {}
        all_tested: list[float] = []
        all_opponent: list[float] = []
        for seat in seats:
            tested, opponent = _seat_values(games, seat, metric)
            diffs = per_seat_diffs[seat] = _differences(tested, opponent)
            tested_values = list(tested.values())
            opponent_values = [v for values in opponent.values() for v in values]
            all_tested += tested_values
            all_opponent += opponent_values
            comparisons.append(
                Comparison(
                    metric,
                    kind,
                    seat,
                    summarize(tested_values, rate, confidence),
                    summarize(opponent_values, rate, confidence),
                    mean_interval(list(diffs.values()), confidence),
                    len(diffs),
                )
            )
        overall = list(mean_by_seed(per_seat_diffs.values()).values())
        comparisons.append(
            Comparison(
                metric,
                kind,
                ALL_SEATS,
                summarize(all_tested, rate, confidence),
                summarize(all_opponent, rate, confidence),
                mean_interval(overall, confidence),
                len(overall),
            )
        )
    return comparisons


def summarize_games(
    games: Sequence[Game],
    seats: Sequence[str],
    metric_kinds: Mapping[str, str],
    rates: Collection[str] = (),
    confidence: float = 0.95,
) -> list[GameMetric]:
    """Per game metric: its mean by the tested model's seat, then over all games."""
    ok = [g for g in games if g.status == "ok"]
    names = {m for g in ok for m in g.game_values}
    rows = []
    for metric in _metric_order(metric_kinds, names):
        kind = metric_kinds.get(metric, OUTCOME)
        for seat in [*seats, ALL_SEATS]:
            values = [
                g.game_values[metric]
                for g in ok
                if metric in g.game_values and seat in (ALL_SEATS, g.tested_seat)
            ]
            rows.append(GameMetric(metric, kind, seat, summarize(values, metric in rates, confidence)))
    return rows
