"""The JSONL trajectory format: one episode per line, appended with recovery from a torn last line."""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from langgraph_omar.trajectory.episode import Episode
from langgraph_omar.trajectory.files import _fsync_directory, _replace_atomically
from langgraph_omar.trajectory.record import episode_record
from langgraph_omar.trajectory.validation import TrajectoryFileError, _episode_from_dict


class TornLineWarning(UserWarning):
    """The last line of a JSONL file is an incomplete episode (an interrupted append); it was skipped."""


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
    "agent_rewards",
    "reward_dimensions",
    "metadata",
)


def _episode_line(episode: Episode) -> bytes:
    data = episode_record(episode)
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
                    data = _decode_line(line, path, number)
                except TrajectoryFileError as e:
                    if not terminated:
                        return True, False
                    raise TrajectoryFileError(
                        path, e.where, f"{e.problem}; refusing to append to a corrupt file"
                    ) from None
                if not isinstance(data, dict) or not isinstance(data.get("episode_id"), str):
                    raise TrajectoryFileError(path, f"line {number}", "no string 'episode_id'")
                state.ids.add(data["episode_id"])
        if not terminated:
            return False, True
        state.offset += len(line)
        state.lines = number
    return False, False


def _decode_line(line: bytes, path: Path, number: int) -> Any:
    """One line's JSON value; anything that is not valid JSON is a TrajectoryFileError naming the line."""
    try:
        return json.loads(line, parse_constant=_refuse_constant)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError and the constants refused
        raise TrajectoryFileError(path, f"line {number}", f"not valid JSON ({e})") from None
    except RecursionError:
        raise TrajectoryFileError(path, f"line {number}", "not an episode: nested too deeply") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (the writer refuses NaN and infinity)")


def _iter_jsonl(path: Path) -> Iterator[Episode]:
    complete = 0
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                data = _decode_line(line, path, number)
            except TrajectoryFileError:
                if not line.endswith(b"\n"):
                    warnings.warn(
                        f"{path} line {number}: skipped 1 torn last line ({len(line)} bytes, no newline: an "
                        f"interrupted write) after {complete} complete episodes",
                        TornLineWarning,
                        stacklevel=3,
                    )
                    return
                raise
            yield _episode_from_dict(data, path, f"line {number}")
            complete += 1
