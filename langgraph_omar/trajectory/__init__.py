"""Trajectories: the episode schema (`Episode`, `Turn`: episode -> turns -> tokens) and its files.

Files: episodes to and from JSONL or Parquet, and per-turn records for TRL.

JSONL (`.jsonl`, `.ndjson`): one `Episode.to_dict()` per line, keys ordered `schema_version`, `episode_id`,
..., `turns` last. Parquet (`.parquet`): one row per episode, `turns` a list<struct> column; `rewards` and
`reward_dimensions` become lists of structs and free-form `metadata` a JSON string, because `datasets` has no
equivalent of Arrow's map type. Both load with `datasets.load_dataset("json" | "parquet", data_files=...)`.

Guarantees of `write_episodes`:
- Episode-atomic: a writer killed at any instant (kill -9) leaves a file whose complete episodes all read
  back; an interrupted JSONL append leaves at most one torn last line, which readers skip with a
  `TornLineWarning` and the next writer removes.
- Idempotent: episodes whose `episode_id` is already in the file are skipped, so a re-run after a crash
  appends only what is missing.
- Writers of one file are serialized by an advisory lock on a sidecar file `.<name>.lock` (POSIX only).

Costs: a JSONL append writes only the new lines and, within one process, reads only what others added since
its last call; a Parquet write rewrites the whole file, so write Parquet in batches (or export JSONL to it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from langgraph_omar.trajectory.episode import ADAPTER_BY_ROLE, SCHEMA_VERSION, Episode, Turn, role_of
from langgraph_omar.trajectory.files import _remove_stale_temp_files, _writer_lock
from langgraph_omar.trajectory.jsonl import TornLineWarning, _iter_jsonl, _write_jsonl
from langgraph_omar.trajectory.parquet import PARQUET_SCHEMA, _iter_parquet, _write_parquet
from langgraph_omar.trajectory.validation import TrajectoryFileError, _warn_on_duplicate_ids

__all__ = [
    "ADAPTER_BY_ROLE",
    "SCHEMA_VERSION",
    "Episode",
    "Turn",
    "JSONL_SUFFIXES",
    "PARQUET_SCHEMA",
    "PARQUET_SUFFIX",
    "TornLineWarning",
    "TrajectoryFileError",
    "iter_episodes",
    "read_episodes",
    "role_of",
    "to_trl_records",
    "write_episodes",
]

JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIX = ".parquet"

# ---------------------------------------------------------------------------------------------- public API


def write_episodes(path: str | os.PathLike[str], episodes: Iterable[Episode], *, append: bool = True) -> int:
    """Write `episodes` to `path` (JSONL, or Parquet for `.parquet`) and return how many were written.

    append=True keeps the file's episodes and adds those whose `episode_id` it does not hold yet;
    append=False replaces the file with exactly `episodes`. Raises ValueError for two episodes with one id
    in `episodes`, for values JSON cannot hold (NaN, infinity, objects), and for a corrupt existing file.
    """
    path = Path(path)
    fmt = _format_of(path)
    new = list(episodes)
    _check_writable(new)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _writer_lock(path):
        _remove_stale_temp_files(path)
        if fmt == "parquet":
            return _write_parquet(path, new, append=append)
        return _write_jsonl(path, new, append=append)


def iter_episodes(path: str | os.PathLike[str]) -> Iterator[Episode]:
    """Yield the episodes of a JSONL or Parquet trajectory file in file order.

    Raises TrajectoryFileError naming the file and line (JSONL) or row (Parquet) for anything that is not a
    valid episode of this schema version. A torn last JSONL line is skipped with a TornLineWarning; two
    episodes with one id are both returned, with a DuplicateEpisodeWarning.
    """
    path = Path(path)
    fmt = _format_of(path)  # checked now, not at the first next()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such trajectory file")
    return _warn_on_duplicate_ids(path, _iter_parquet(path) if fmt == "parquet" else _iter_jsonl(path))


def read_episodes(path: str | os.PathLike[str]) -> list[Episode]:
    """All episodes of a trajectory file; see `iter_episodes` for the errors."""
    return list(iter_episodes(path))


def to_trl_records(
    episodes: Iterable[Episode], roles: Iterable[str] | str | None = None, *, include_failed: bool = False
) -> list[dict[str, Any]]:
    """One record per turn: the `prompt_ids`, `completion_ids` and `logprobs` that TRL's GRPOTrainer
    `rollout_func` returns, plus `episode_id`, `role` and `reward` (the role's terminal reward).

    roles: keep only these roles' turns (a single string is one role); None keeps all.
    Episodes whose status is not "ok" are left out unless include_failed. A kept turn whose role has no
    terminal reward in its episode raises ValueError.
    """
    wanted = None if roles is None else ({roles} if isinstance(roles, str) else set(roles))
    records = []
    for episode in episodes:
        if episode.status != "ok" and not include_failed:
            continue
        for turn in episode.turns:
            if wanted is not None and turn.role not in wanted:
                continue
            if turn.role not in episode.rewards:
                raise ValueError(
                    f"episode {episode.episode_id!r}: no terminal reward for role {turn.role!r} "
                    f"(rewards are for {sorted(episode.rewards)})"
                )
            records.append(
                {
                    "prompt_ids": list(turn.prompt_ids),
                    "completion_ids": list(turn.completion_ids),
                    "logprobs": list(turn.logprobs),
                    "episode_id": episode.episode_id,
                    "role": turn.role,
                    "reward": float(episode.rewards[turn.role]),
                }
            )
    return records


# ------------------------------------------------------------------------ format dispatch and write checks


def _format_of(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIX):
        return "parquet"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    raise ValueError(
        f"{path}: unknown trajectory format; expected a path ending in {JSONL_SUFFIXES + (PARQUET_SUFFIX,)}"
    )


def _check_writable(episodes: list[Episode]) -> None:
    seen: set[str] = set()
    for ep in episodes:
        if not isinstance(ep.episode_id, str) or not ep.episode_id:
            raise ValueError(f"episode_id must be a non-empty string, got {ep.episode_id!r}")
        if ep.episode_id in seen:
            raise ValueError(f"episode id {ep.episode_id!r} appears twice in the episodes to write")
        seen.add(ep.episode_id)
        if ep.schema_version != SCHEMA_VERSION:
            raise ValueError(
                f"episode {ep.episode_id!r} has schema_version {ep.schema_version}; this writer writes "
                f"{SCHEMA_VERSION}"
            )
        _check_finite(ep)


def _check_finite(episode: Episode) -> None:
    """NaN and infinity have no JSON form, and in a trajectory they are a bug upstream: refuse them."""
    values: list[tuple[str, Iterable[float]]] = [
        ("rewards", episode.rewards.values()),
        ("reward_dimensions", (v for dims in episode.reward_dimensions.values() for v in dims.values())),
    ]
    for i, turn in enumerate(episode.turns):
        values += [
            (f"turn {i} reward/temperature", (turn.reward, turn.temperature)),
            (f"turn {i} logprobs", turn.logprobs),
        ]
    for name, numbers in values:
        if not all(math.isfinite(x) for x in numbers):
            raise ValueError(f"episode {episode.episode_id!r}: non-finite value in {name}")
