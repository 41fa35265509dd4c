"""Run many episodes of a graph at once, recording every model call into trajectories.

Episodes run through `graph.abatch_as_completed`, so their model calls reach the shared engine together
and are served in batches; one failing episode is recorded as failed and the others go on.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from tqdm.auto import tqdm

from langgraph_omar.errors import OmarError
from langgraph_omar.tracing import TraceRecorder, source_counts
from langgraph_omar.trajectory import Episode


@dataclass
class RolloutSummary:
    episodes: int
    failed: int
    turns: int
    generated_tokens: int
    seconds: float
    sources: dict[str, int] = field(default_factory=dict)  # turns per source: policy, model, human

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        sources = ", ".join(f"{source} {n}" for source, n in self.sources.items())
        return (
            f"episodes {self.episodes}, failed {self.failed}, turns {self.turns}"
            f"{f' ({sources})' if sources else ''}, generated tokens {self.generated_tokens}, "
            f"{self.tokens_per_second:.1f} tokens/s, {self.seconds:.1f} s"
        )


async def arun_episodes(
    graph: Any,
    inputs: Sequence[dict[str, Any]],
    metadata: Sequence[dict[str, Any]] | None = None,
    *,
    max_concurrency: int = 64,
    progress: bool = True,
    recursion_limit: int = 500,
    description: str = "episodes",
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
    with tqdm(total=len(inputs), desc=description, unit="ep", disable=not progress) as bar:
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
        sources=source_counts(episodes),
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
