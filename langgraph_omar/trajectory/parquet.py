"""The Parquet trajectory format: one row per episode, rewritten whole on every write."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from langgraph_omar.trajectory.episode import Episode
from langgraph_omar.trajectory.files import _replace_atomically
from langgraph_omar.trajectory.record import episode_record
from langgraph_omar.trajectory.validation import TrajectoryFileError, _episode_from_dict

_MESSAGE_STRUCT = pa.struct([("role", pa.string()), ("content", pa.string())])
_TURN_FIELDS = [
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
_V2_TURN_FIELDS = [("source", pa.string()), ("model", pa.string()), ("messages", pa.list_(_MESSAGE_STRUCT))]
_V3_TURN_FIELDS = [("agent", pa.string())]
_AGENT_REWARDS = ("agent_rewards", pa.list_(pa.struct([("agent", pa.string()), ("value", pa.float64())])))


def _episode_schema(turn_fields: list[tuple[str, pa.DataType]], agents: bool = True) -> pa.Schema:
    return pa.schema(
        [
            ("schema_version", pa.int64()),
            ("episode_id", pa.string()),
            ("status", pa.string()),
            ("error", pa.string()),
            ("rewards", pa.list_(pa.struct([("role", pa.string()), ("value", pa.float64())]))),
            *([_AGENT_REWARDS] if agents else []),
            (
                "reward_dimensions",
                pa.list_(pa.struct([("role", pa.string()), ("name", pa.string()), ("value", pa.float64())])),
            ),
            ("metadata", pa.string()),  # JSON text
            ("turns", pa.list_(pa.struct(turn_fields))),
        ]
    )


PARQUET_SCHEMA = _episode_schema(_TURN_FIELDS + _V2_TURN_FIELDS + _V3_TURN_FIELDS)
_READABLE_SCHEMAS = (  # version 3, 2, 1
    PARQUET_SCHEMA,
    _episode_schema(_TURN_FIELDS + _V2_TURN_FIELDS, agents=False),
    _episode_schema(_TURN_FIELDS, agents=False),
)


def _episodes_table(episodes: list[Episode]) -> pa.Table:
    try:
        return pa.Table.from_pylist([episode_record(ep) for ep in episodes], schema=PARQUET_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
        raise ValueError(f"episodes do not fit the Parquet trajectory schema: {e}") from e


def _open_parquet(path: Path) -> pq.ParquetFile:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise TrajectoryFileError(path, "", f"not a readable Parquet file ({e})") from e
    schema = parquet.schema_arrow
    if any(schema.equals(known, check_metadata=False) for known in _READABLE_SCHEMAS):
        return parquet
    if not any(set(schema.names) == set(known.names) for known in _READABLE_SCHEMAS):
        missing = [name for name in PARQUET_SCHEMA.names if name not in schema.names]
        unknown = [name for name in schema.names if name not in PARQUET_SCHEMA.names]
        raise TrajectoryFileError(
            path, "", f"not a trajectory file: missing columns {missing}, unknown columns {unknown}"
        )
    raise TrajectoryFileError(path, "", f"column types differ from the trajectory schema: {schema}")


def _iter_parquet(path: Path) -> Iterator[Episode]:
    parquet = _open_parquet(path)
    number = 0
    for batch in parquet.iter_batches(batch_size=256):
        for row in batch.to_pylist():
            number += 1
            yield _episode_from_dict(row, path, f"row {number}")


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
        table = pa.concat_tables([_current_layout(existing, path), table])
    _replace_atomically(path, lambda f: pq.write_table(table, f, compression="zstd"))
    return len(episodes)


def _current_layout(table: pa.Table, path: Path) -> pa.Table:
    """`path`'s table in this version's schema: an older file's rows are upgraded."""
    if table.schema.equals(PARQUET_SCHEMA, check_metadata=False):
        return table.cast(PARQUET_SCHEMA)
    episodes = [_episode_from_dict(row, path, f"row {i + 1}") for i, row in enumerate(table.to_pylist())]
    return _episodes_table(episodes)
