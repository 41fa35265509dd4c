"""The registry: environment names -> `Environment` classes, and `module:attribute` graphs of one's own.

Built-in environments are listed here; other packages register theirs through the entry point group
`langgraph_omar.environments` (in their pyproject.toml):

    [project.entry-points."langgraph_omar.environments"]
    auction = "my_package.auction:AuctionEnvironment"

Every command resolves its ENV argument with `load_environment`: a registered name, or `module:attribute`
naming an `Environment` class or instance, a compiled graph, or a factory of one (the minimal contract,
wrapped in `GraphEnvironment`). The current folder is on the import path, as with `python -m`.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from langchain_core.language_models import BaseChatModel

from langgraph_omar.envs.environment import Environment
from langgraph_omar.errors import OmarError, UserCodeError, first_line
from langgraph_omar.trajectory import Episode

ENTRY_POINT_GROUP = "langgraph_omar.environments"
DEFAULT_ENVIRONMENT = "negotiation"  # the demo's: judge-free, short, and the 135M model can close deals
BUILTIN: dict[str, str] = {
    "negotiation": "langgraph_omar.envs.negotiation.environment:Negotiation",
    "sotopia": "langgraph_omar.envs.sotopia.environment:Sotopia",
    "werewolf": "langgraph_omar.envs.werewolf.environment:Werewolf",
}


class ContractWarning(UserWarning):
    """A graph of one's own leaves out part of the contract (no sample_input, a role without reward)."""


@cache
def registered() -> dict[str, str]:
    """Name -> "module:attribute" of every registered environment (built-ins, then entry points)."""
    names = dict(BUILTIN)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        names.setdefault(entry.name, entry.value)
    return names


def import_attribute(target: str) -> tuple[ModuleType, Any]:
    """Import `module:attribute` with the current folder on the path; any failure is one OmarError line."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise OmarError(f"{target!r}: expected 'module:attribute'")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` has it: a module beside you imports
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise OmarError(f"cannot import {module_name!r} for {target!r}: {exc}") from None
    except Exception as exc:  # a module that raises at import: its error, in one line
        raise OmarError(f"importing {module_name!r} raised {type(exc).__name__}: {exc}") from None
    try:
        return module, getattr(module, attribute)
    except AttributeError:
        raise OmarError(f"module {module_name!r} has no attribute {attribute!r}") from None


def load_environment(spec: str, options: Mapping[str, Any] | None = None) -> Environment:
    """The environment `spec` names (a registered name or `module:attribute`), with its options."""
    options = dict(options or {})
    module, obj = import_attribute(_target(spec))
    if isinstance(obj, Environment) or (inspect.isclass(obj) and issubclass(obj, Environment)):
        return _instantiate(obj, options, spec)
    if options:
        raise OmarError(f"{spec} is a graph, not an Environment: it takes no options ({sorted(options)})")
    if not callable(obj) and not hasattr(obj, "abatch_as_completed"):
        raise OmarError(f"{spec!r} is neither an Environment, a compiled graph, nor a factory of one")
    return GraphEnvironment(spec, obj, module)


def environment_class(spec: str) -> type[Environment] | None:
    """The Environment class of a registered name or `module:attribute` (None for a plain graph)."""
    obj = import_attribute(_target(spec))[1]
    if isinstance(obj, Environment):
        return type(obj)
    return obj if inspect.isclass(obj) and issubclass(obj, Environment) else None


def _target(spec: str) -> str:
    """The `module:attribute` a registered name or a `module:attribute` spec stands for."""
    target = registered().get(spec, spec)
    if ":" not in target:
        raise OmarError(
            f"unknown environment {spec!r}: expected one of {sorted(registered())} or 'module:attribute'"
        )
    return target


def _instantiate(obj: Any, options: dict[str, Any], spec: str) -> Environment:
    if isinstance(obj, Environment):
        return obj if not options else _instantiate(type(obj), {**obj.options(), **options}, spec)
    known = {f.name for f in obj.option_fields()}
    unknown = sorted(set(options) - known)
    if unknown:
        raise OmarError(f"{spec} has no option {unknown[0]!r}; its options: {sorted(known) or 'none'}")
    try:
        environment: Environment = obj(**options)
    except (TypeError, ValueError) as exc:
        raise OmarError(f"{spec}: {first_line(exc)}") from None
    return environment


@dataclass
class GraphEnvironment(Environment):
    """A graph of one's own under the minimal contract: `module:attribute` names a compiled graph or a
    factory (called with `model=` when it takes it, and `judge=` when it takes that), the module may define
    `sample_input(seed)` (else every episode starts from `{}`), `sample_config(seed)` (the scenario's
    `config["configurable"]` values) and `ROLES` (else the roles are learnt from the first episodes), and the
    final state's `rewards` maps roles to floats."""

    target: str = ""
    graph_or_factory: Any = field(default=None, repr=False)
    module: ModuleType | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.name = self.target
        self.description = (inspect.getdoc(self.module) or "graph of one's own").splitlines()[0]
        self._sample: Callable[[int], dict[str, Any]] | None = getattr(self.module, "sample_input", None)
        self._config: Callable[[int], dict[str, Any]] | None = getattr(self.module, "sample_config", None)
        if self._sample is None:
            warnings.warn(
                f"{self.target}: its module has no sample_input(seed), so every episode starts from {{}}",
                ContractWarning,
                stacklevel=3,
            )

    @classmethod
    def option_fields(cls) -> list[Any]:
        return []  # a plain graph has no options; write an Environment subclass for some

    @property
    def is_factory(self) -> bool:
        return not hasattr(self.graph_or_factory, "abatch_as_completed")

    def _takes(self, name: str) -> bool:
        if not self.is_factory:
            return False
        try:
            return name in inspect.signature(self.graph_or_factory).parameters
        except (TypeError, ValueError):
            return False

    @property
    def takes_model(self) -> bool:
        """Whether the graph can be built on a given chat model (training needs that)."""
        return self._takes("model")

    def build_graph(self, model: BaseChatModel, *, judge: BaseChatModel | None = None) -> Any:
        """The factory's graph on `model`; a factory that also takes `judge` gets the commands' judge (the
        served base model, adapter disabled), so an LLM-computed reward never runs on the policy it scores."""
        if not self.is_factory:
            return self.graph_or_factory
        kwargs = {"model": model} if self.takes_model else {}
        if judge is not None and self._takes("judge"):
            kwargs["judge"] = judge
        try:
            graph = self.graph_or_factory(**kwargs)
        except Exception as exc:
            raise UserCodeError(
                f"{self.target}: the factory raised {type(exc).__name__} (below)", exc
            ) from None
        if not hasattr(graph, "abatch_as_completed"):
            raise OmarError(
                f"{self.target}: the factory returned {type(graph).__name__}, not a compiled graph"
            )
        return graph

    def sample_input(self, seed: int) -> dict[str, Any]:
        if self._sample is None:
            return {}
        value = self._sample(seed)
        if not isinstance(value, dict):
            raise OmarError(
                f"{self.target}: sample_input({seed}) returned {type(value).__name__}, not a dict"
            )
        return value

    def sample_config(self, seed: int) -> dict[str, Any]:
        if self._config is None:
            return {}
        value = self._config(seed)
        if not isinstance(value, dict):
            raise OmarError(
                f"{self.target}: sample_config({seed}) returned {type(value).__name__}, not a dict"
            )
        if "thread_id" in value:
            raise OmarError(
                f"{self.target}: sample_config({seed}) sets thread_id; every episode runs on its own thread "
                "(its episode id), so that no two share state"
            )
        return value

    def game_values(self, episode: Episode) -> dict[str, float]:
        """Every number (booleans as 0/1) in the final state's `metrics`: a graph of one's own declares no
        `game_metrics`, so whatever it reports reaches the evaluation report."""
        metrics = episode.metadata.get("metrics") or {}
        return {
            str(name): float(value)
            for name, value in metrics.items()
            if isinstance(value, (bool, int, float)) and math.isfinite(value)
        }

    @property
    def roles(self) -> tuple[str, ...] | None:
        declared = getattr(self.module, "ROLES", None)
        return tuple(declared) if declared else None
