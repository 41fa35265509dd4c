"""Torch threads that leave other processes their share of the cores.

Two CPU processes that each run as many OpenMP threads as there are cores collapse rather than share: every
parallel region ends at a barrier that waits for its slowest thread, and a thread the scheduler has given to
the other process holds everyone up (measured on 2 shared cores: a 4-episode rollout took 58 s alone and
1518 s beside an `omar train`; a decode step at batch 16 under a loaded machine took 1.4-2.0 s with 2 threads
and 0.22 s with 1). So a CPU engine and trainer re-choose their thread count every few seconds (before a
batch, before an update): the cores that other processes are not using, at least one. The others' use is the
1-minute load average minus what this process itself kept busy since the last look. libgomp's own wait
policy (spin a while, then sleep) is kept: OMP_WAIT_POLICY=PASSIVE, the default until 2026-12-08, made every
parallel region wake its threads from sleep and a 2-thread bf16 update micro-batch 4.1 s against 2.5 s, slower
than one thread (3.4 s), without making two processes fairer (`benchmarks/shared_cores.py`: 1.19 against 0.98).

An explicit OMP_NUM_THREADS turns this off: the user's count stays.
"""

from __future__ import annotations

import os
import threading
import time

import torch

INTERVAL_S = 5.0  # between two looks at the load


def fair_threads(cores: int, load: float, own_busy: float) -> int:
    """Threads for this process on `cores` cores: those the others leave free (rounded), at least 1.

    load: the machine's 1-minute load average; own_busy: the cores this process kept busy lately (its CPU
    seconds per wall second), which the load average counts too."""
    others = max(0.0, load - own_busy)
    return max(1, min(cores, round(cores - others)))


class _Governor:
    def __init__(self) -> None:
        self.cores = torch.get_num_threads()  # torch's default: the physical cores
        self.enabled = "OMP_NUM_THREADS" not in os.environ
        self._lock = threading.Lock()
        self._last: tuple[float, float] | None = None  # (wall, this process's CPU seconds) at the last look

    def adjust(self) -> int:
        """Set torch's thread count for the current load (at most every INTERVAL_S); returns it."""
        if not self.enabled:
            return torch.get_num_threads()
        with self._lock:
            now, cpu = time.monotonic(), _cpu_seconds()
            if self._last is not None and now - self._last[0] < INTERVAL_S:
                return torch.get_num_threads()
            own = 0.0 if self._last is None else (cpu - self._last[1]) / (now - self._last[0])
            self._last = (now, cpu)
            try:
                load = os.getloadavg()[0]
            except OSError:  # no load average on this system: keep the count
                return torch.get_num_threads()
            threads = fair_threads(self.cores, load, own)
            if threads != torch.get_num_threads():
                torch.set_num_threads(threads)
            return threads


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


_governor = _Governor()


def adjust_threads(device: torch.device) -> None:
    """Before a batch or an update on `device`: a CPU process takes its fair share of the cores."""
    if device.type == "cpu":
        _governor.adjust()
