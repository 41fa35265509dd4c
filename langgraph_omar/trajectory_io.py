"""Trajectory files: episodes to and from JSONL or Parquet, and per-turn records for TRL.

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

import contextlib
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from langgraph_omar.errors import OmarError
from langgraph_omar.trajectory import SCHEMA_VERSION, Episode, Turn

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, single writer assumed
    fcntl = None  # type: ignore[assignment]

JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIX = ".parquet"


class TrajectoryFileError(OmarError):
    """A trajectory file that cannot be read or appended to; the message names the file and the line/row."""

    def __init__(self, path: str | os.PathLike[str], where: str, problem: str) -> None:
        self.path = str(path)
        self.where = where
        self.problem = problem
        super().__init__(f"{self.path}{' ' + where if where else ''}: {problem}")


class TornLineWarning(UserWarning):
    """The last line of a JSONL file is an incomplete episode (an interrupted append); it was skipped."""


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
    valid episode of this schema version. A torn last JSONL line is skipped with a TornLineWarning.
    """
    path = Path(path)
    fmt = _format_of(path)  # checked now, not at the first next()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such trajectory file")
    return _iter_parquet(path) if fmt == "parquet" else _iter_jsonl(path)


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


# ------------------------------------------------------------------------------------ validation on read

# Value checks keyed by the dataclass field annotations of trajectory.py (strings, thanks to
# `from __future__ import annotations`); a field with an annotation missing here fails a test.
_VALUE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "str": lambda v: isinstance(v, str),
    "str | None": lambda v: v is None or isinstance(v, str),
    "int": lambda v: type(v) is int,
    "float": lambda v: type(v) in (int, float),
    "list[int]": lambda v: isinstance(v, list) and all(type(x) is int for x in v),
    "list[float]": lambda v: isinstance(v, list) and all(type(x) in (int, float) for x in v),
    "list[Turn]": lambda v: isinstance(v, list),
    "dict[str, Any]": lambda v: isinstance(v, dict),
    "dict[str, float]": lambda v: isinstance(v, dict) and all(type(x) in (int, float) for x in v.values()),
    "dict[str, dict[str, float]]": lambda v: (
        isinstance(v, dict)
        and all(isinstance(d, dict) and all(type(x) in (int, float) for x in d.values()) for d in v.values())
    ),
}


def _check_keys_and_types(data: dict[str, Any], cls: type, context: str) -> None:
    for f in fields(cls):
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ValueError(f"{context}missing key {f.name!r}")
            continue
        if not _VALUE_CHECKS[str(f.type)](data[f.name]):
            raise ValueError(
                f"{context}key {f.name!r} should be {f.type}, got {type(data[f.name]).__name__} "
                f"{_short_repr(data[f.name])}"
            )


def _episode_from_dict(data: Any, path: Path, where: str) -> Episode:
    """Validate one decoded record and build the Episode; every problem becomes a TrajectoryFileError."""
    if not isinstance(data, dict):
        raise TrajectoryFileError(path, where, f"expected a JSON object, got {type(data).__name__}")
    _check_schema_version(data, path, where)
    try:
        _check_keys_and_types(data, Episode, "")
        for i, turn in enumerate(data.get("turns", [])):
            if not isinstance(turn, dict):
                raise ValueError(f"turn {i}: expected an object, got {type(turn).__name__}")
            _check_keys_and_types(turn, Turn, f"turn {i}: ")
            if len(turn["logprobs"]) != len(turn["completion_ids"]):
                counts = f"{len(turn['logprobs'])} logprobs for {len(turn['completion_ids'])} completion ids"
                raise ValueError(f"turn {i}: {counts}")
        return Episode.from_dict(data)
    except (ValueError, TypeError) as e:
        raise TrajectoryFileError(path, where, str(e)) from e


def _check_schema_version(data: dict[str, Any], path: Path, where: str) -> None:
    if "schema_version" not in data:
        raise TrajectoryFileError(path, where, "missing key 'schema_version'")
    if data["schema_version"] != SCHEMA_VERSION:
        raise TrajectoryFileError(
            path,
            where,
            f"schema_version {data['schema_version']!r} is not supported "
            f"(this langgraph-omar reads schema_version {SCHEMA_VERSION})",
        )


def _short_repr(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------------------------------- JSONL

# Append-with-recovery rather than rewrite-and-replace: a rewrite costs the whole file per call, quadratic
# over a run that saves every episode as it ends, while an append costs only the new lines. An append that is
# interrupted can leave one thing behind: a torn last line. It is always detectable, because every record
# ends in "\n" and a JSON object cut anywhere before its closing brace does not parse. Readers skip it with a
# warning (a reader may run while a writer appends); the next writer truncates it before appending, so a torn
# line never ends up in the middle of the file.

# Our lines start with these two keys, so the ids of a long file are found without parsing its turns.
_ID_PREFIX = re.compile(rb'\{\s*"schema_version"\s*:\s*-?\d+\s*,\s*"episode_id"\s*:\s*("(?:[^"\\]|\\.)*")')
_LEADING_KEYS = (
    "schema_version",
    "episode_id",
    "status",
    "error",
    "rewards",
    "reward_dimensions",
    "metadata",
)


def _plain_dict(episode: Episode) -> dict[str, Any]:
    """`Episode.to_dict()` without its copies: `dataclasses.asdict` deep-copies every token id, which costs
    more than the whole JSON encoding of a long episode. The result shares lists with `episode`: read only."""
    data = {f.name: getattr(episode, f.name) for f in fields(Episode)}
    data["turns"] = [{f.name: getattr(turn, f.name) for f in fields(Turn)} for turn in episode.turns]
    return data


def _episode_line(episode: Episode) -> bytes:
    data = _plain_dict(episode)
    ordered = {k: data[k] for k in _LEADING_KEYS} | {k: v for k, v in data.items() if k not in _LEADING_KEYS}
    try:
        text = json.dumps(ordered, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (ValueError, TypeError) as e:
        raise ValueError(f"episode {episode.episode_id!r} cannot be written as JSON: {e}") from e
    return text.encode("utf-8") + b"\n"


@dataclass
class _ScanState:
    """What this process has read of one JSONL file, so that a loop appending episode after episode reads each
    byte once instead of the whole file per call. Kept per (device, inode); trusted only while the file is at
    least `offset` long and still holds `tail` just before it, which a rewrite in place would change."""

    offset: int = 0  # end of the last complete line read: a line boundary
    lines: int = 0  # lines before offset
    tail: bytes = b""
    ids: set[str] = field(default_factory=set)


_TAIL_BYTES = 256
_scan_states: dict[tuple[int, int], _ScanState] = {}


def _resume_scan(f: IO[bytes], key: tuple[int, int], size: int) -> _ScanState:
    state = _scan_states.get(key)
    if state is None or state.offset > size:
        return _ScanState()
    f.seek(state.offset - len(state.tail))
    return state if f.read(len(state.tail)) == state.tail else _ScanState()


def _write_jsonl(path: Path, episodes: list[Episode], *, append: bool) -> int:
    if not append:
        _replace_atomically(path, lambda f: f.writelines(_episode_line(ep) for ep in episodes))
        return len(episodes)
    existed = path.exists()
    with open(path, "a+b") as f:  # O_APPEND: every write lands at the end, whatever the position
        stat = os.fstat(f.fileno())
        key = (stat.st_dev, stat.st_ino)
        state = _resume_scan(f, key, stat.st_size)
        torn, unterminated = _scan_for_append(f, path, state)
        if torn:
            warnings.warn(
                f"{path}: removed a torn last line ({stat.st_size - state.offset} bytes) left by an "
                "interrupted write",
                TornLineWarning,
                stacklevel=3,
            )
            f.truncate(state.offset)
        todo = [ep for ep in episodes if ep.episode_id not in state.ids]
        written = (b"\n" if unterminated else b"") + b"".join(_episode_line(ep) for ep in todo)
        if written or torn:
            f.write(written)  # one write: a kill leaves at most one torn line
            f.flush()
            os.fsync(f.fileno())
            state.ids.update(ep.episode_id for ep in todo)
            state.lines += written.count(b"\n")
            state.offset = f.seek(0, os.SEEK_END)
        f.seek(max(0, state.offset - _TAIL_BYTES))
        state.tail = f.read(state.offset - f.tell())
        _scan_states[key] = state
    if not existed:
        _fsync_directory(path.parent)
    return len(todo)


def _scan_for_append(f: IO[bytes], path: Path, state: _ScanState) -> tuple[bool, bool]:
    """Read the file from `state.offset`, adding ids and advancing over complete lines.

    Returns (torn, unterminated): whether the last line is torn (`state.offset` is then where it starts),
    and whether it is a complete episode that lacks its "\\n" (its id is then in `state.ids`).
    """
    f.seek(state.offset)
    for line in f:
        number = state.lines + 1
        terminated = line.endswith(b"\n")
        if line.strip():
            match = _ID_PREFIX.match(line) if terminated else None
            if match:
                state.ids.add(json.loads(match.group(1)))
            else:
                try:
                    data = json.loads(line)
                except ValueError as e:
                    if not terminated:
                        return True, False
                    raise TrajectoryFileError(
                        path, f"line {number}", f"not valid JSON ({e}); refusing to append to a corrupt file"
                    ) from e
                if not isinstance(data, dict) or not isinstance(data.get("episode_id"), str):
                    raise TrajectoryFileError(path, f"line {number}", "no string 'episode_id'")
                state.ids.add(data["episode_id"])
        if not terminated:
            return False, True
        state.offset += len(line)
        state.lines = number
    return False, False


def _iter_jsonl(path: Path) -> Iterator[Episode]:
    complete = 0
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
                if not line.endswith(b"\n"):
                    warnings.warn(
                        f"{path} line {number}: skipped 1 torn last line ({len(line)} bytes, no newline: an "
                        f"interrupted write) after {complete} complete episodes",
                        TornLineWarning,
                        stacklevel=3,
                    )
                    return
                raise TrajectoryFileError(path, f"line {number}", f"not valid JSON ({e})") from e
            yield _episode_from_dict(data, path, f"line {number}")
            complete += 1


# ----------------------------------------------------------------------------------------------- Parquet

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


# ------------------------------------------------------------------------------------------- file plumbing


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


@contextlib.contextmanager
def _writer_lock(path: Path) -> Iterator[None]:
    """Serialize writers of `path` across processes; the kernel releases the lock if a writer is killed."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(path.with_name(f".{path.name}.lock"), "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-"


def _remove_stale_temp_files(path: Path) -> None:
    """Temp files are made only under the writer lock: any found while holding it are a killed writer's."""
    for stale in path.parent.glob(_temp_prefix(path) + "*"):
        stale.unlink(missing_ok=True)


def _replace_atomically(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    tmp = path.with_name(f"{_temp_prefix(path)}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a created or replaced directory entry durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
