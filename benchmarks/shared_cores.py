"""Two `omar rollout` processes started together on one machine, against one alone, before and now.

    python benchmarks/shared_cores.py [--episodes 4] [--variants now,before]

For each variant: one `omar rollout negotiation --episodes N` alone, then two started together (other
scenario seeds); printed: the seconds of each and the ratio of the slower of the pair to the one alone. The
target is a ratio within 3 (a fair share is 2: two processes on the same cores, plus some loss to switching).
- now: the defaults (libgomp's own wait policy and the fair-share thread count of
  `langgraph_omar/serving/threads.py`);
- passive: the same with OMP_WAIT_POLICY=PASSIVE (idle threads sleep at once; the default until 2026-12-08);
- before: libgomp's own wait policy and one thread per core, fixed, as before the fair-share thread count.
Last line: `slower of two / alone (now): X.XX`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


VARIANTS = {
    "now": {},  # `rollout` drops an inherited OMP_WAIT_POLICY: libgomp's own
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "before": {"OMP_NUM_THREADS": str(os.cpu_count() or 1)},
}


def rollout(out: Path, seed: int, episodes: int, variant: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(VARIANTS[variant], PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "langgraph_omar.cli", "rollout", "negotiation"]
    command += ["--episodes", str(episodes), "--seed", str(seed), "--out", str(out)]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def timed(processes: list[subprocess.Popen[bytes]]) -> list[float]:
    started, ends = time.perf_counter(), []
    for process in processes:
        _, err = process.communicate()
        if process.returncode != 0:
            sys.exit(f"omar rollout failed: {err.decode()[-2000:]}")
        ends.append(time.perf_counter() - started)
    return ends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--variants", default="now,before", help=f"comma separated, of {sorted(VARIANTS)}")
    args = parser.parse_args()
    worst: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for variant in args.variants.split(","):
            (alone,) = timed([rollout(out / f"{variant}-alone.jsonl", 0, args.episodes, variant)])
            pair = timed(
                [
                    rollout(out / f"{variant}-pair{k}.jsonl", 100 * (k + 1), args.episodes, variant)
                    for k in range(2)
                ]
            )
            worst[variant] = max(pair) / alone
            print(
                f"{variant}: alone {alone:.1f} s; two together {pair[0]:.1f} s and {pair[1]:.1f} s; "
                f"slower / alone {worst[variant]:.2f}"
            )
    if "now" in worst:
        print(f"slower of two / alone (now): {worst['now']:.2f}")


if __name__ == "__main__":
    main()
