"""Validation on read: a decoded record becomes an Episode only if every key has the type its dataclass field
declares; anything else is a TrajectoryFileError naming the file and the line or row."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from langgraph_omar.errors import OmarError
from langgraph_omar.trajectory.episode import READABLE_SCHEMA_VERSIONS, Episode, Turn
from langgraph_omar.trajectory.record import record_to_dict


class TrajectoryFileError(OmarError):
    """A trajectory file that cannot be read or appended to; the message names the file and the line/row."""

    def __init__(self, path: str | os.PathLike[str], where: str, problem: str) -> None:
        self.path = str(path)
        self.where = where
        self.problem = problem
        super().__init__(f"{self.path}{' ' + where if where else ''}: {problem}")


# Value checks keyed by the dataclass field annotations of trajectory.py (strings, thanks to
# `from __future__ import annotations`); a field with an annotation missing here fails a test.
_VALUE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "str": lambda v: isinstance(v, str),
    "str | None": lambda v: v is None or isinstance(v, str),
    "int": lambda v: type(v) is int,
    "float": lambda v: _number(v),
    "list[int]": lambda v: isinstance(v, list) and all(type(x) is int for x in v),
    "list[float]": lambda v: isinstance(v, list) and all(_number(x) for x in v),
    "list[Turn]": lambda v: isinstance(v, list),
    "dict[str, Any]": lambda v: isinstance(v, dict),
    "list[dict[str, str]]": lambda v: (
        isinstance(v, list)
        and all(isinstance(d, dict) and all(isinstance(x, str) for x in d.values()) for d in v)
    ),
    "dict[str, float]": lambda v: isinstance(v, dict) and all(_number(x) for x in v.values()),
    "dict[str, dict[str, float]]": lambda v: (
        isinstance(v, dict)
        and all(isinstance(d, dict) and all(_number(x) for x in d.values()) for d in v.values())
    ),
}


def _number(value: Any) -> bool:
    """A finite int or float: the writer refuses NaN and infinity, so the reader does too."""
    return type(value) in (int, float) and math.isfinite(value)


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


class DuplicateEpisodeWarning(UserWarning):
    """A trajectory file holds two episodes with one id (files joined by hand, say); both are read back."""


def _warn_on_duplicate_ids(path: Path, episodes: Iterator[Episode]) -> Iterator[Episode]:
    """`episodes` as they are, with a DuplicateEpisodeWarning for every id seen before in the file."""
    first: dict[str, int] = {}
    for number, episode in enumerate(episodes, start=1):
        seen = first.setdefault(episode.episode_id, number)
        if seen != number:
            warnings.warn(
                f"{path}: episode id {episode.episode_id!r} appears again (episodes {seen} and {number} of the "
                "file); both are returned",
                DuplicateEpisodeWarning,
                stacklevel=3,
            )
        yield episode


def _episode_from_dict(record: Any, path: Path, where: str) -> Episode:
    """Validate one record (a JSONL line's object, a Parquet row) and build the Episode; every problem becomes
    a TrajectoryFileError."""
    if not isinstance(record, dict):
        raise TrajectoryFileError(path, where, f"expected a JSON object, got {type(record).__name__}")
    _check_schema_version(record, path, where)
    try:
        data = record_to_dict(record)
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
    version = data["schema_version"]
    if type(version) is not int or version not in READABLE_SCHEMA_VERSIONS:
        raise TrajectoryFileError(
            path,
            where,
            f"schema_version {data['schema_version']!r} is not supported "
            f"(this langgraph-omar reads schema_version {_listed(READABLE_SCHEMA_VERSIONS)})",
        )


def _listed(versions: tuple[int, ...]) -> str:
    """(1, 2, 3) -> "1, 2 and 3"."""
    *rest, last = map(str, versions)
    return f"{', '.join(rest)} and {last}" if rest else last


def _short_repr(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
