"""Run many episodes of a graph at once, recording every model call into trajectories.

Episodes run through `graph.abatch_as_completed`, so their model calls reach the shared engine together
and are served in batches; one failing episode is recorded as failed and the others go on. With `out`, each
episode is appended to a trajectory file as soon as it finishes: a run killed part-way keeps every finished
episode, and the same run again appends only the episodes the file lacks (episode ids are stable).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig
from tqdm.auto import tqdm

from langgraph_omar.errors import OmarError, first_line
from langgraph_omar.tracing import TraceRecorder, source_counts
from langgraph_omar.trajectory import JSONL_SUFFIXES, PARQUET_SUFFIX, Episode, write_episodes


@dataclass
class RolloutSummary:
    episodes: int
    failed: int
    turns: int
    generated_tokens: int
    seconds: float
    written: int | None = None  # episodes appended to `out` (None without one)
    sources: dict[str, int] = field(default_factory=dict)  # turns per source: policy, model, human
    rewards: dict[str, float] = field(default_factory=dict)  # role -> mean reward over the finished episodes
    tool_offers: int = 0  # model calls that were offered tools (bind_tools)
    tool_calls: int = 0  # tool calls those calls made
    closed_early: int = 0  # constrained calls whose grammar closed them to end by max_tokens

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        sources = ", ".join(f"{source} {n}" for source, n in self.sources.items())
        return (
            f"episodes {self.episodes}, failed {self.failed}, turns {self.turns}"
            f"{f' ({sources})' if sources else ''}, generated tokens {self.generated_tokens}, "
            f"{self.tokens_per_second:.1f} tokens/s, {self.seconds:.1f} s"
            + (
                f", tool calls {self.tool_calls} in {self.tool_offers} calls with tools"
                if self.tool_offers
                else ""
            )
            + (f", closed early {self.closed_early}" if self.closed_early else "")
        )

    def reward_line(self) -> str:
        """Each role's mean reward over the finished episodes."""
        if not self.rewards:
            return "rewards: none (no finished episode's final state has `rewards`)"
        finished = self.episodes - self.failed
        means = ", ".join(f"{role} {value:+.3f}" for role, value in sorted(self.rewards.items()))
        return f"mean reward over {finished} finished episodes: {means}"

    def tool_note(self) -> str | None:
        """Said when the model was offered tools and never called one."""
        return tool_note(self.episodes, self.tool_offers, self.tool_calls)


def tool_counts(episodes: Sequence[Episode]) -> tuple[int, int]:
    """(model calls offered tools, tool calls those calls made) over the episodes' turns."""
    turns = [t for e in episodes for t in e.turns]
    return sum("tools" in t.metadata for t in turns), sum(
        len(t.metadata.get("tool_calls") or []) for t in turns
    )


def tool_note(episodes: int, offers: int, calls: int) -> str | None:
    """Said when the model was offered tools and never called one (`omar rollout`, each `omar train` iteration)."""
    if not offers or calls:
        return None
    return (
        f"0 tool calls in {episodes} episodes, though {offers} model calls were offered "
        "tools: the model chose to answer in text (tool_choice='required' or a tool's name forces a call; "
        "a written call needs room: --max-tokens)"
    )


class EpisodeAppender:
    """Appends finished episodes to a trajectory file while a rollout goes on.

    Writes run in a worker thread, one at a time, so the episodes never wait on the disk; episodes that finish
    while a write runs go into the next write (for Parquet, which rewrites the whole file, that keeps the
    writes fewer than the episodes). Each write is `write_episodes`, episode-atomic and idempotent: a process
    killed at any instant keeps every episode that finished before the write under way (if any) began.
    A failed write is raised by the next `add` (the rollout stops) or by `aclose`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.written = 0
        self._pending: list[Episode] = []
        self._task: asyncio.Task[None] | None = None
        self._raised = False

    def add(self, episode: Episode) -> None:
        self._raise_failed_write()
        self._pending.append(episode)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._pending:  # episodes added during a write are taken by the next turn of this loop
            batch, self._pending = self._pending, []
            self.written += await asyncio.to_thread(write_episodes, self.path, batch)

    def _raise_failed_write(self) -> None:
        task = self._task
        if task is not None and task.done() and not task.cancelled() and not self._raised:
            error = task.exception()
            if error is not None:
                self._raised = True
                raise error

    async def aclose(self) -> int:
        """Wait for the writes still running (a failed one is raised); returns how many episodes were written."""
        if self._task is not None:
            await asyncio.wait([self._task])
            self._raise_failed_write()
        return self.written


async def arun_episodes(
    graph: Any,
    inputs: Sequence[dict[str, Any]],
    metadata: Sequence[Mapping[str, Any]] | None = None,
    *,
    max_concurrency: int = 64,
    progress: bool = True,
    recursion_limit: int = 500,
    description: str = "episodes",
    out: str | os.PathLike[str] | None = None,
    configurable: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[list[Episode], RolloutSummary]:
    """Run one episode per input concurrently; returns the episodes in input order and a summary.

    metadata: per episode, merged into the run's `config["metadata"]` (episode_id, seed, scenario_id,
    group_id); a missing `episode_id` follows from the graph's name and the episode's seed (`with_episode_ids`).
    configurable: per episode, the run's `config["configurable"]` values (an environment's `sample_config`:
    `user_id`, ...). Every episode runs on a thread of its own, `thread_id` = its episode id, so a graph that
    keeps state by thread (a checkpointer, a store, a dict keyed by thread) never shows one episode another's.
    recursion_limit: LangGraph supersteps per episode; a graph compiled with a larger bound of its own (a
    Werewolf graph carries one sized for its longest game) keeps that bound.
    out: a JSONL or Parquet trajectory file each episode is appended to as soon as it finishes (in the order
    they finish; see `EpisodeAppender`); episodes whose id it already holds are not written again.
    `summary.written` counts the new ones.
    """
    recursion_limit = max(recursion_limit, bound_recursion_limit(graph))
    metadata = with_episode_ids(getattr(graph, "name", None) or "episode", len(inputs), metadata)
    # One recorder per episode: a finished episode is read from its own recorder at once.
    recorders = [TraceRecorder() for _ in metadata]
    extra = list(configurable) if configurable is not None else [{}] * len(metadata)
    if len(extra) != len(metadata):
        raise OmarError(f"{len(extra)} configurable entries for {len(metadata)} inputs")
    configs: list[RunnableConfig] = [
        {
            "callbacks": [recorder],
            "metadata": meta,
            "configurable": {**values, "thread_id": meta["episode_id"]},
            "max_concurrency": max_concurrency,
            "recursion_limit": recursion_limit,
        }
        for recorder, meta, values in zip(recorders, metadata, extra, strict=True)
    ]
    appender = EpisodeAppender(out) if out is not None else None
    finished: dict[int, Episode] = {}
    start = time.perf_counter()
    try:
        with (
            _threads_for(min(max_concurrency, len(inputs))),
            tqdm(total=len(inputs), desc=description, unit="ep", disable=not progress) as bar,
        ):
            async for index, output in graph.abatch_as_completed(
                list(inputs), configs, return_exceptions=True
            ):
                finished[index] = _finished_episode(recorders[index], metadata[index], output)
                if appender is not None:
                    appender.add(finished[index])
                bar.update(1)
    finally:
        written = await appender.aclose() if appender is not None else None
    seconds = time.perf_counter() - start
    episodes = [finished[i] for i in range(len(metadata))]
    tool_offers, tool_calls = tool_counts(episodes)
    summary = RolloutSummary(
        episodes=len(episodes),
        failed=sum(e.status != "ok" for e in episodes),
        turns=sum(len(e.turns) for e in episodes),
        generated_tokens=sum(len(t.completion_ids) for e in episodes for t in e.turns),
        seconds=seconds,
        written=written,
        sources=source_counts(episodes),
        rewards=mean_rewards(episodes),
        tool_offers=tool_offers,
        tool_calls=tool_calls,
        closed_early=sum(bool(t.metadata.get("closed_early")) for e in episodes for t in e.turns),
    )
    return episodes, summary


def mean_rewards(episodes: Sequence[Episode]) -> dict[str, float]:
    """Role -> mean of its rewards over the finished episodes that give it one."""
    by_role: dict[str, list[float]] = {}
    for episode in episodes:
        if episode.status == "ok":
            for role, reward in episode.rewards.items():
                by_role.setdefault(role, []).append(reward)
    return {role: sum(values) / len(values) for role, values in by_role.items()}


@contextlib.contextmanager
def _threads_for(episodes: int) -> Iterator[None]:
    """A thread per concurrent episode in the event loop's default pool while the episodes run.

    Sync (`def`) nodes run there (LangChain's `run_in_executor`); its default size, min(32, CPUs + 4), would
    cap the model calls in flight, hence the engine's batches, below `max_concurrency` (6 on 2 cores). The
    loop's own pool is put back afterwards.
    """
    loop = asyncio.get_running_loop()
    # asyncio has no getter for the default executor: read the attribute BaseEventLoop keeps it in
    previous = getattr(loop, "_default_executor", None)
    pool = ThreadPoolExecutor(max_workers=episodes + 4, thread_name_prefix="omar-episode")
    loop.set_default_executor(pool)
    try:
        yield
    finally:
        if hasattr(loop, "_default_executor"):
            loop._default_executor = previous  # type: ignore[attr-defined]
        pool.shutdown(wait=False)


def _finished_episode(recorder: TraceRecorder, meta: dict[str, Any], output: Any) -> Episode:
    """The recorded episode of a finished run (an empty one when no call was recorded), failed on an error."""
    recorded = {e.episode_id: e for e in recorder.trajectories()}
    episode = recorded.get(meta["episode_id"]) or Episode(episode_id=meta["episode_id"], metadata=dict(meta))
    if isinstance(output, BaseException) and episode.status == "ok":
        episode.status = "failed"
        episode.error = first_line(output, with_type=True)
    return episode


def with_episode_ids(
    name: str, count: int, metadata: Sequence[Mapping[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Copies of `metadata` (one per episode), each with an `episode_id`: the given one, else `NAME-SEED`
    (`NAME-INDEX` without a seed), with `-2`, `-3`, ... on later episodes of a seed already used in this call.

    Ids that follow from the episode rather than from chance make a rerun into the same file append only
    what is missing. Raises OmarError for an id given twice.
    """
    copies = [dict(m) for m in (metadata if metadata is not None else [{}] * count)]
    if len(copies) != count:
        raise OmarError(f"{len(copies)} metadata entries for {count} inputs")
    given = [m["episode_id"] for m in copies if m.get("episode_id") is not None]
    taken = set(map(str, given))
    if len(taken) != len(given):
        duplicate = next(i for i in given if given.count(i) > 1)
        raise OmarError(f"episode id {duplicate!r} is given to more than one episode")
    for i, meta in enumerate(copies):
        if meta.get("episode_id") is not None:
            meta["episode_id"] = str(meta["episode_id"])
            continue
        base = f"{name}-{meta.get('seed', i)}"
        candidate, repeat = base, 1
        while candidate in taken:
            repeat += 1
            candidate = f"{base}-{repeat}"
        taken.add(candidate)
        meta["episode_id"] = candidate
    return copies


def stable_episode_id(name: str, seed: int, settings: Mapping[str, Any]) -> str:
    """`NAME-SEED-HASH`: the same environment, scenario seed and settings (options, input, model, sampling)
    always give the same id, so the same rollout run again into one file appends only what the file lacks,
    and a rollout with other settings appends episodes of its own."""
    text = json.dumps(settings, sort_keys=True, default=repr)
    return f"{name}-{seed}-{hashlib.blake2b(text.encode(), digest_size=4).hexdigest()}"


def check_output(path: str | os.PathLike[str]) -> None:
    """Refuse, before any episode runs, an output the writer would refuse at the first write: a name without
    a trajectory suffix, a folder, a file that is not a readable trajectory file, a parent that is a file."""
    path = Path(path)
    if not path.name.lower().endswith((*JSONL_SUFFIXES, PARQUET_SUFFIX)):
        raise OmarError(f"{path}: expected a .jsonl, .ndjson or .parquet file")
    if path.is_dir():
        raise OmarError(f"{path} is a folder, not a trajectory file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OmarError(f"cannot create the folder of {path}: {exc.strerror or exc}") from None
    if path.exists():
        write_episodes(path, [])  # reads the ids the file holds: a corrupt file is refused now


def bound_recursion_limit(graph: Any) -> int:
    """The recursion limit a graph was compiled or bound with (`graph.with_config(recursion_limit=...)`),
    or 0 when it has none: a limit passed at call time would otherwise replace it, even a smaller one."""
    bound = getattr(graph, "config", None)
    value = bound.get("recursion_limit") if isinstance(bound, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def run_episodes(
    graph: Any,
    inputs: Sequence[dict[str, Any]],
    metadata: Sequence[Mapping[str, Any]] | None = None,
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
