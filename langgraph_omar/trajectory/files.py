"""File plumbing shared by both formats: the writer lock, stale temp files, atomic replace, directory fsync."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, single writer assumed
    fcntl = None  # type: ignore[assignment]


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
