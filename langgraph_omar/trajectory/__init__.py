"""Trajectories: the episode schema (`Episode`, `Turn`: episode -> turns -> tokens) and its files.

Files: episodes to and from JSONL or Parquet, per-turn token records for TRL's GRPO (`to_trl_records`) and
per-turn chats in TRL's conversational format (`to_trl_conversations`); rewards added after the fact live in
`langgraph_omar.trajectory.labels`.

One record per episode, the same fields with the same shapes in both formats (schema version 3;
`record.episode_record`), because `datasets` and Arrow have no type for a mapping whose keys vary by row:

    schema_version     int                 episode_id, status, error   str (error may be null)
    rewards            list of {role: str, value: float}
    agent_rewards      list of {agent: str, value: float}   (an agent's own terminal reward; default: its role's)
    reward_dimensions  list of {role: str, name: str, value: float}
    metadata           str: JSON text of the episode's metadata mapping
    turns              list of turns, each: role, node, text, source ("policy" | "model" | "human"), model,
                       messages (list of {role, content}), prompt_ids, completion_ids (int lists: empty unless
                       source is "policy"), logprobs (floats, one per completion id), step, finish_reason,
                       temperature, adapter, adapter_version, reward, degenerate, fallback, run_id,
                       metadata (JSON text), and agent (who acted; the role when the graph names none)

JSONL (`.jsonl`, `.ndjson`): one record per line, keys ordered `schema_version`, `episode_id`, ..., `turns`
last. Parquet (`.parquet`): one row per record (`PARQUET_SCHEMA`). Both load with
`datasets.load_dataset("json" | "parquet", data_files=...)` into the same columns. In Python an `Episode` holds
mappings (`rewards` {role: value}, `agent_rewards` {agent: value}, `reward_dimensions` {role: {name: value}},
`metadata` a dict); the record is only the file's shape. Version 2 files (no agents) are read with each turn's
agent its role. Version 1 files (JSONL with mappings, turns without source/model/messages) are read and
upgraded; appending to a version 1 JSONL file leaves lines of both versions, which this reader reads but
`datasets` cannot load as one table: rewrite it with `write_episodes(path, read_episodes(path), append=False)`.

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

from langgraph_omar.trajectory.episode import (
    ADAPTER_BY_ROLE,
    READABLE_SCHEMA_VERSIONS,
    SCHEMA_VERSION,
    SOURCES,
    Episode,
    Turn,
    agent_of,
    role_of,
)
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
    "READABLE_SCHEMA_VERSIONS",
    "SOURCES",
    "TornLineWarning",
    "TrajectoryFileError",
    "agent_of",
    "iter_episodes",
    "read_episodes",
    "role_of",
    "to_trl_conversations",
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


def _chosen_turns(
    episodes: Iterable[Episode], roles: Iterable[str] | str | None, include_failed: bool
) -> Iterator[tuple[Episode, int, Turn]]:
    """(episode, turn index, turn) of the kept roles' turns (a single string is one role; None keeps all) of
    the episodes whose status is "ok" (every episode with include_failed)."""
    wanted = None if roles is None else ({roles} if isinstance(roles, str) else set(roles))
    for episode in episodes:
        if episode.status != "ok" and not include_failed:
            continue
        for index, turn in enumerate(episode.turns):
            if wanted is None or turn.role in wanted:
                yield episode, index, turn


def to_trl_records(
    episodes: Iterable[Episode], roles: Iterable[str] | str | None = None, *, include_failed: bool = False
) -> list[dict[str, Any]]:
    """One record per turn the policy sampled: the `prompt_ids`, `completion_ids` and `logprobs` that TRL's
    GRPOTrainer `rollout_func` returns, plus `episode_id`, `role`, `agent` and `reward` (the agent's terminal
    reward, `Episode.reward_of`).

    roles: keep only these roles' turns (a single string is one role); None keeps all. Turns of another
    source (a hosted model, a person) have no token ids and are left out (see `to_trl_conversations`).
    Episodes whose status is not "ok" are left out unless include_failed. A kept turn whose agent has no
    terminal reward in its episode raises ValueError.
    """
    records = []
    for episode, _, turn in _chosen_turns(episodes, roles, include_failed):
        if turn.source != "policy":
            continue
        reward = episode.reward_of(turn)
        if reward is None:
            agent = "" if turn.agent == turn.role else f" (agent {turn.agent!r})"
            raise ValueError(
                f"episode {episode.episode_id!r}: no terminal reward for role {turn.role!r}{agent} "
                f"(rewards are for {sorted(episode.rewards)})"
            )
        records.append(
            {
                "prompt_ids": list(turn.prompt_ids),
                "completion_ids": list(turn.completion_ids),
                "logprobs": list(turn.logprobs),
                "episode_id": episode.episode_id,
                "role": turn.role,
                "agent": turn.agent,
                "reward": float(reward),
            }
        )
    return records


def to_trl_conversations(
    episodes: Iterable[Episode],
    roles: Iterable[str] | str | None = None,
    *,
    include_failed: bool = False,
    prompt_completion: bool = False,
) -> list[dict[str, Any]]:
    """One record per turn in TRL's conversational dataset format, for its SFT (or, paired, DPO) trainers:
    `messages` = the chat the turn was given + `{"role": "assistant", "content": turn.text}`, or with
    prompt_completion `prompt` (the chat) and `completion` (the one assistant message), so that the loss
    covers the reply only. Plus `episode_id`, `role`, `agent`, `source`, `model` and `reward` (the agent's
    terminal reward, None when it has none). `datasets.Dataset.from_list(records)` makes the dataset.

    roles / include_failed: as in `to_trl_records`; turns of every source are kept. A kept turn without
    recorded messages (a version 1 file) raises ValueError.
    """
    records = []
    for episode, index, turn in _chosen_turns(episodes, roles, include_failed):
        if not turn.messages:
            raise ValueError(
                f"episode {episode.episode_id!r} turn {index}: no recorded messages (recorded before schema "
                "version 2?)"
            )
        prompt = [{"role": m["role"], "content": m["content"]} for m in turn.messages]
        reply = [{"role": "assistant", "content": turn.text}]
        chat = {"prompt": prompt, "completion": reply} if prompt_completion else {"messages": prompt + reply}
        reward = episode.reward_of(turn)
        records.append(
            chat
            | {
                "episode_id": episode.episode_id,
                "role": turn.role,
                "agent": turn.agent,
                "source": turn.source,
                "model": turn.model,
                "reward": None if reward is None else float(reward),
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
    values.append(("agent_rewards", episode.agent_rewards.values()))
    for name, numbers in values:
        if not all(math.isfinite(x) for x in numbers):
            raise ValueError(f"episode {episode.episode_id!r}: non-finite value in {name}")
