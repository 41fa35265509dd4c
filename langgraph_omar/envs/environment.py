"""The environment interface: one object says everything `omar rollout | train | eval` need about a game.

An environment is a dataclass whose fields are its own options (each with help text, see `option`), declared
once: the command line turns them into flags (`omar rollout negotiation --kind split`), a training config
carries them under `env.options`, and `load_environment` validates them. It knows

- how to build its graph on a chat model (`build_graph(model, judge=...)`): every role calls `model`; which
  adapter plays which role in one episode comes from the run metadata (`adapter_by_role`), so one compiled
  graph serves self-play, play against the base model and arena evaluation;
- how to sample an input from a scenario seed (`sample_input(seed)`), and the scenario's
  `config["configurable"]` values if the graph reads any (`sample_config(seed)`; every episode also gets its
  own `thread_id`, its episode id);
- its roles, and how they form the seats of an evaluation (`seating`: each role alone, or teams);
- its outcome metrics (`seat_metrics` compared between the two sides, `game_metrics` reported per game).

The minimal contract of a graph of one's own needs none of this: a factory taking `model=` (and `judge=` if
its rewards need an LLM judge; or a compiled graph), a module-level `sample_input(seed)` (and optionally `sample_config(seed)`), and `rewards: {role: float}`
in the final state (plus `agent_rewards: {agent: float}` where agents of one role earn their own).
`GraphEnvironment` (in `registry`) wraps such a module; docs/environments.md documents both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from langchain_core.language_models import BaseChatModel

from langgraph_omar.trajectory import Episode

OUTCOME, JUDGE = "outcome", "judge"
DEFAULT_RECURSION_LIMIT = 500


@dataclass(frozen=True)
class Metric:
    """How a metric is reported. kind: OUTCOME (from the game's rules) or JUDGE (from an LLM judge, which
    overrates trained models: SOTOPIA-pi); rate: a 0/1 outcome (wins, deals), reported with a Wilson interval."""

    help: str
    kind: str = OUTCOME
    rate: bool = False


REWARD = Metric("the seat's roles' mean reward (the final state's `rewards`)")


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field that is an environment option: its help text goes to the command line."""
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class Environment:
    """Base class of environments. Subclasses are dataclasses; their fields are their options."""

    name = ""  # the registered name (a class attribute, not an option)
    description = ""
    seat_metrics: ClassVar[dict[str, Metric]] = {"reward": REWARD}
    game_metrics: ClassVar[dict[str, Metric]] = {}

    # ---- what every command needs ---------------------------------------------------------------------
    def build_graph(self, model: BaseChatModel, *, judge: BaseChatModel | None = None) -> Any:
        """A compiled graph whose roles all call `model` (a judge, if the game has one, calls `judge`)."""
        raise NotImplementedError

    def sample_input(self, seed: int) -> dict[str, Any]:
        """The input state of the scenario of `seed`."""
        return {}

    def sample_config(self, seed: int) -> dict[str, Any]:
        """The `config["configurable"]` values of the scenario of `seed` (`user_id`, ...), beside the
        episode's own `thread_id`."""
        return {}

    @property
    def roles(self) -> tuple[str, ...] | None:
        """The roles that act; None when only playing tells (a graph of one's own that does not say)."""
        return None

    @property
    def recursion_limit(self) -> int:
        """LangGraph supersteps one episode may take."""
        return DEFAULT_RECURSION_LIMIT

    # ---- evaluation seats ------------------------------------------------------------------------------
    def seating(self, seed: int, roles: tuple[str, ...]) -> dict[str, str]:
        """Role -> seat in the scenario of `seed`: by default each role is a seat of its own."""
        return {role: role for role in roles}

    def seats(self, roles: tuple[str, ...]) -> tuple[str, ...]:
        """The seats the tested model takes in turn (default: the roles)."""
        return roles

    def seat_values(self, episode: Episode, seating: Mapping[str, str]) -> dict[str, dict[str, float]]:
        """Seat -> metric -> value (default: the mean reward of the seat's roles that have one)."""
        by_seat: dict[str, list[float]] = {}
        for role, seat in seating.items():
            if role in episode.rewards:
                by_seat.setdefault(seat, []).append(episode.rewards[role])
        return {seat: {"reward": sum(values) / len(values)} for seat, values in by_seat.items()}

    def game_values(self, episode: Episode) -> dict[str, float]:
        """Metric -> value of a finished game (default: the final state's numeric `metrics` named in
        `game_metrics`; booleans count as 0/1)."""
        metrics = episode.metadata.get("metrics") or {}
        values = {}
        for name in self.game_metrics:
            value = metrics.get(name)
            if isinstance(value, (bool, int, float)):
                values[name] = float(value)
        return values

    # ---- options ---------------------------------------------------------------------------------------
    @classmethod
    def option_fields(cls) -> list[dataclasses.Field[Any]]:
        return [f for f in dataclasses.fields(cls) if f.init]

    def options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in self.option_fields()}

    def metric_kinds(self) -> dict[str, str]:
        return {name: m.kind for name, m in {**self.seat_metrics, **self.game_metrics}.items()}

    def metric_help(self) -> dict[str, str]:
        return {name: m.help for name, m in {**self.seat_metrics, **self.game_metrics}.items()}

    def rate_metrics(self) -> frozenset[str]:
        return frozenset(n for n, m in {**self.seat_metrics, **self.game_metrics}.items() if m.rate)
