"""The Parquet trajectory format: one row per episode, rewritten whole on every write."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from langgraph_omar.trajectory.episode import Episode
from langgraph_omar.trajectory.files import _replace_atomically
from langgraph_omar.trajectory.jsonl import _plain_dict
from langgraph_omar.trajectory.validation import (
    TrajectoryFileError,
    _check_schema_version,
    _episode_from_dict,
)

_TURN_STRUCT = pa.struct(
    [
        ("role", pa.string()),
        ("node", pa.string()),
        ("text", pa.string()),
        ("prompt_ids", pa.list_(pa.int32())),
        ("completion_ids", pa.list_(pa.int32())),
        ("logprobs", pa.list_(pa.float64())),
        ("step", pa.int64()),
        ("finish_reason", pa.string()),
        ("temperature", pa.float64()),
        ("adapter", pa.string()),
        ("adapter_version", pa.int64()),
        ("reward", pa.float64()),
        ("degenerate", pa.string()),
        ("fallback", pa.string()),
        ("run_id", pa.string()),
        ("metadata", pa.string()),  # JSON text
    ]
)
PARQUET_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int64()),
        ("episode_id", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("rewards", pa.list_(pa.struct([("role", pa.string()), ("value", pa.float64())]))),
        (
            "reward_dimensions",
            pa.list_(pa.struct([("role", pa.string()), ("name", pa.string()), ("value", pa.float64())])),
        ),
        ("metadata", pa.string()),  # JSON text
        ("turns", pa.list_(_TURN_STRUCT)),
    ]
)


def _json_text(value: Any, episode_id: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (ValueError, TypeError) as e:
        raise ValueError(f"episode {episode_id!r}: metadata cannot be written as JSON: {e}") from e


def _episode_row(episode: Episode) -> dict[str, Any]:
    row = _plain_dict(episode)  # fresh dicts: the replacements below leave `episode` untouched
    row["rewards"] = [{"role": r, "value": v} for r, v in episode.rewards.items()]
    row["reward_dimensions"] = [
        {"role": r, "name": n, "value": v}
        for r, dims in episode.reward_dimensions.items()
        for n, v in dims.items()
    ]
    row["metadata"] = _json_text(episode.metadata, episode.episode_id)
    for turn in row["turns"]:
        turn["metadata"] = _json_text(turn["metadata"], episode.episode_id)
    return row


def _row_to_dict(row: dict[str, Any]) -> dict[str, Any]:
    """Undo `_episode_row`; JSON errors propagate as ValueError naming the column."""
    data = dict(row)
    data["rewards"] = {item["role"]: item["value"] for item in row["rewards"] or []}
    dimensions: dict[str, dict[str, float]] = {}
    for item in row["reward_dimensions"] or []:
        dimensions.setdefault(item["role"], {})[item["name"]] = item["value"]
    data["reward_dimensions"] = dimensions
    data["metadata"] = _decode_json_column(row["metadata"], "metadata")
    data["turns"] = [
        {**t, "metadata": _decode_json_column(t["metadata"], f"turns[{i}].metadata")}
        for i, t in enumerate(row["turns"] or [])
    ]
    return data


def _decode_json_column(text: str | None, column: str) -> Any:
    if text is None:
        return {}
    try:
        return json.loads(text)
    except ValueError as e:
        raise ValueError(f"column {column!r} is not valid JSON ({e})") from e


def _episodes_table(episodes: list[Episode]) -> pa.Table:
    try:
        return pa.Table.from_pylist([_episode_row(ep) for ep in episodes], schema=PARQUET_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
        raise ValueError(f"episodes do not fit the Parquet trajectory schema: {e}") from e


def _open_parquet(path: Path) -> pq.ParquetFile:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise TrajectoryFileError(path, "", f"not a readable Parquet file ({e})") from e
    schema = parquet.schema_arrow
    missing = [name for name in PARQUET_SCHEMA.names if name not in schema.names]
    unknown = [name for name in schema.names if name not in PARQUET_SCHEMA.names]
    if missing or unknown:
        raise TrajectoryFileError(
            path, "", f"not a trajectory file: missing columns {missing}, unknown columns {unknown}"
        )
    if not schema.equals(PARQUET_SCHEMA, check_metadata=False):
        raise TrajectoryFileError(path, "", f"column types differ from the trajectory schema: {schema}")
    return parquet


def _iter_parquet(path: Path) -> Iterator[Episode]:
    parquet = _open_parquet(path)
    number = 0
    for batch in parquet.iter_batches(batch_size=256):
        for row in batch.to_pylist():
            number += 1
            _check_schema_version(row, path, f"row {number}")  # before decoding another version's layout
            try:
                data = _row_to_dict(row)
            except ValueError as e:
                raise TrajectoryFileError(path, f"row {number}", str(e)) from e
            yield _episode_from_dict(data, path, f"row {number}")


def _write_parquet(path: Path, episodes: list[Episode], *, append: bool) -> int:
    existing = None
    if append and path.exists():
        existing = _open_parquet(path).read()
        known_ids = set(existing.column("episode_id").to_pylist())
        episodes = [ep for ep in episodes if ep.episode_id not in known_ids]
        if not episodes:
            return 0
    table = _episodes_table(episodes)
    if existing is not None:
        table = pa.concat_tables([existing.cast(PARQUET_SCHEMA), table])
    _replace_atomically(path, lambda f: pq.write_table(table, f, compression="zstd"))
    return len(episodes)
