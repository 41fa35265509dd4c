"""The run folder of a training run: the one place that knows its layout, and the only reader of its metrics.

    RUN/config.yaml          the resolved run config (what ran)
    RUN/metrics.jsonl        one JSON line per iteration, appended with one write + fsync
    RUN/trajectories.jsonl   the episodes trained on
    RUN/sources.json         a run from files: the files' sha256, the roles, the reward function
    RUN/checkpoints/         step-N/ and `latest` (rl/checkpoint.py writes them)
    RUN/adapter/             the trained adapter, replaced atomically at the end of a run
    RUN/logs/                the experiment trackers' files (TensorBoard)

`metrics.jsonl` is an append-only log a killed run may leave with a torn last line: the reader skips that
line with a warning (`TornLineWarning`, as the trajectory files' readers do); a bad line anywhere else is an OmarError naming it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraph_omar.atomic import write_atomic
from langgraph_omar.errors import OmarError
from langgraph_omar.trajectory import Episode, write_episodes
from langgraph_omar.trajectory.jsonl import TornLineWarning  # a trajectory file's torn line is said alike

__all__ = ["RunFolder", "TornLineWarning"]


@dataclass(frozen=True)
class RunFolder:
    """The files of one training run under `path` (see the module docstring)."""

    path: Path

    def __init__(self, path: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def trajectories_file(self) -> Path:
        return self.path / "trajectories.jsonl"

    @property
    def sources_file(self) -> Path:
        return self.path / "sources.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def adapter(self) -> Path:
        return self.path / "adapter"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    def create(self) -> RunFolder:
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    # ---- metrics.jsonl ----------------------------------------------------------------------------------

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records of metrics.jsonl, each a JSON object with a numeric `iteration` (none if the file does
        not exist). A torn last line is skipped with a `TornLineWarning`; any other bad line is an OmarError
        naming it."""
        if not self.metrics_file.exists():
            return []
        lines = self.metrics_file.read_text(encoding="utf-8").splitlines()
        last = max((n for n, line in enumerate(lines) if line.strip()), default=-1)
        rows = []
        for n, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                if n == last:
                    warnings.warn(
                        f"{self.metrics_file}:{n + 1}: a torn last line (a killed run's), skipped",
                        TornLineWarning,
                        stacklevel=2,
                    )
                    continue
                raise OmarError(f"{self.metrics_file}:{n + 1}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("iteration"), int | float):
                raise OmarError(
                    f"{self.metrics_file}:{n + 1}: expected a JSON object with a numeric 'iteration'"
                )
            rows.append(row)
        return rows

    def keep_metrics_before(self, iteration: int) -> None:
        """Drop the records of iterations >= `iteration` (written after the checkpoint a resume starts from),
        and a torn last line."""
        if not self.metrics_file.exists():
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TornLineWarning)  # dropping it is the point
            kept = [row for row in self.read_metrics() if row["iteration"] < iteration]
        write_atomic(self.metrics_file, "".join(json.dumps(row, sort_keys=True) + "\n" for row in kept))

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one record as one line, with one write and an fsync (a kill leaves at most a torn line)."""
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        fd = os.open(self.metrics_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    # ---- the other files --------------------------------------------------------------------------------

    def write_config(self, yaml_text: str) -> None:
        write_atomic(self.config_file, yaml_text)

    def append_episodes(self, episodes: Iterable[Episode]) -> None:
        write_episodes(self.trajectories_file, episodes)

    def read_sources(self) -> dict[str, Any] | None:
        """The saved record of what a run from files trained on, or None."""
        if not self.sources_file.exists():
            return None
        return dict(json.loads(self.sources_file.read_text()))

    def write_sources(self, sources: dict[str, Any]) -> None:
        write_atomic(self.sources_file, json.dumps(sources, indent=2) + "\n")

    def publish_adapter(self, save: Callable[[Path], Path]) -> Path:
        """Replace RUN/adapter atomically: `save(tmp)` writes the adapter under a temporary folder of the run
        and returns the folder holding its files."""
        tmp = Path(tempfile.mkdtemp(prefix=".adapter-", dir=self.path))
        try:
            source = save(tmp)
            old = self.path / ".adapter-old"
            shutil.rmtree(old, ignore_errors=True)
            if self.adapter.exists():
                os.replace(self.adapter, old)
            os.replace(source, self.adapter)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return self.adapter
