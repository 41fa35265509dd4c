"""Run many episodes of a graph at once, recording every model call into trajectories.

Episodes run through `graph.abatch_as_completed`, so their model calls reach the shared engine together
and are served in batches; one failing episode is recorded as failed and the others go on.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from tqdm.auto import tqdm

from langgraph_omar.errors import OmarError
from langgraph_omar.tracing import TraceRecorder
from langgraph_omar.trajectory import Episode

# Built-in environment name -> module with `build_graph(model=..., models=...)` and `sample_input(seed)`.
ENVIRONMENTS = {
    "negotiation": "langgraph_omar.envs.negotiation",
    "sotopia": "langgraph_omar.envs.sotopia",
    "werewolf": "langgraph_omar.envs.werewolf",
}


@dataclass
class GraphTarget:
    graph: Any  # a compiled LangGraph graph (any Runnable with abatch_as_completed)
    sample_input: Callable[[int], dict[str, Any]]


def load_target(target: str, model: BaseChatModel | None = None, **graph_kwargs: Any) -> GraphTarget:
    """A built-in environment name, or `module:attribute` naming a compiled graph or a factory of one.

    A factory is called with `model=` when it takes that argument. Inputs come from the environment's (or the
    user module's) `sample_input(seed)` when there is one, else every episode starts from `{}`.
    """
    if target in ENVIRONMENTS:
        module = importlib.import_module(ENVIRONMENTS[target])
        return GraphTarget(module.build_graph(model=model, **graph_kwargs), module.sample_input)
    if ":" not in target:
        raise OmarError(
            f"unknown graph {target!r}: expected one of {sorted(ENVIRONMENTS)} or 'module:attribute'"
        )
    module_name, attribute = target.split(":", 1)
    try:
        module = importlib.import_module(module_name)
        obj = getattr(module, attribute)
    except (ImportError, AttributeError) as exc:
        raise OmarError(f"cannot load graph {target!r}: {exc}") from None
    if callable(obj) and not hasattr(obj, "abatch_as_completed"):
        takes_model = "model" in inspect.signature(obj).parameters
        obj = obj(model=model, **graph_kwargs) if takes_model else obj(**graph_kwargs)
    if not hasattr(obj, "abatch_as_completed"):
        raise OmarError(f"{target!r} is neither a compiled graph nor a factory returning one")
    sample: Callable[[int], dict[str, Any]] = getattr(module, "sample_input", None) or (lambda seed: {})
    return GraphTarget(obj, sample)


@dataclass
class RolloutSummary:
    episodes: int
    failed: int
    turns: int
    generated_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"episodes {self.episodes}, failed {self.failed}, turns {self.turns}, generated tokens "
            f"{self.generated_tokens}, {self.tokens_per_second:.1f} tokens/s, {self.seconds:.1f} s"
        )


async def arun_episodes(
    graph: Any,
    inputs: Sequence[dict[str, Any]],
    metadata: Sequence[dict[str, Any]] | None = None,
    *,
    max_concurrency: int = 64,
    progress: bool = True,
    recursion_limit: int = 500,
) -> tuple[list[Episode], RolloutSummary]:
    """Run one episode per input concurrently; returns the episodes in input order and a summary.

    metadata: per episode, merged into the run's `config["metadata"]` (episode_id, seed, scenario_id,
    group_id); an `episode_id` is made up when missing.
    recursion_limit: LangGraph supersteps per episode; a graph compiled with a larger bound of its own (a
    Werewolf graph carries one sized for its longest game) keeps that bound.
    """
    run = uuid.uuid4().hex[:8]
    recursion_limit = max(recursion_limit, bound_recursion_limit(graph))
    metadata = [dict(m) for m in (metadata or [{} for _ in inputs])]
    for i, meta in enumerate(metadata):
        meta.setdefault("episode_id", f"{run}-{i:05d}")
    recorder = TraceRecorder()
    configs: list[RunnableConfig] = [
        {
            "callbacks": [recorder],
            "metadata": meta,
            "max_concurrency": max_concurrency,
            "recursion_limit": recursion_limit,
        }
        for meta in metadata
    ]
    start = time.perf_counter()
    errors: dict[int, BaseException] = {}
    with tqdm(total=len(inputs), desc="episodes", unit="ep", disable=not progress) as bar:
        async for index, output in graph.abatch_as_completed(list(inputs), configs, return_exceptions=True):
            if isinstance(output, BaseException):
                errors[index] = output
            bar.update(1)
    seconds = time.perf_counter() - start
    by_id = {e.episode_id: e for e in recorder.trajectories()}
    episodes = []
    for i, meta in enumerate(metadata):
        episode = by_id.get(meta["episode_id"]) or Episode(episode_id=meta["episode_id"], metadata=dict(meta))
        if i in errors and episode.status == "ok":
            episode.status, episode.error = (
                "failed",
                f"{type(errors[i]).__name__}: {errors[i]}".splitlines()[0],
            )
        episodes.append(episode)
    summary = RolloutSummary(
        episodes=len(episodes),
        failed=sum(e.status != "ok" for e in episodes),
        turns=sum(len(e.turns) for e in episodes),
        generated_tokens=sum(len(t.completion_ids) for e in episodes for t in e.turns),
        seconds=seconds,
    )
    return episodes, summary


def bound_recursion_limit(graph: Any) -> int:
    """The recursion limit a graph was compiled or bound with (`graph.with_config(recursion_limit=...)`),
    or 0 when it has none: a limit passed at call time would otherwise replace it, even a smaller one."""
    bound = getattr(graph, "config", None)
    value = bound.get("recursion_limit") if isinstance(bound, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def run_episodes(
    graph: Any,
    inputs: Sequence[dict[str, Any]],
    metadata: Sequence[dict[str, Any]] | None = None,
    **kwargs: Any,
) -> tuple[list[Episode], RolloutSummary]:
    """Synchronous `arun_episodes` (for scripts and the command line)."""
    return asyncio.run(arun_episodes(graph, inputs, metadata, **kwargs))


def parse_input(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OmarError(f"--input is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise OmarError("--input must be a JSON object (the graph's input state)")
    return value
