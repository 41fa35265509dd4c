"""Two `omar rollout` processes started together on one machine, against one alone, per OpenMP wait policy.

    python benchmarks/shared_cores.py [--episodes 4] [--policies passive,active]

For each wait policy: one `omar rollout negotiation --episodes N` alone, then two started together (other
scenario seeds); printed: the seconds of each and the ratio of the slower of the pair to the one alone. The
target is a ratio within 3 (each process keeps a fair share: 2 on two processes sharing the cores, plus
some loss to switching). `passive` is what `omar` sets by default (see docs/threads.md); `active` is libgomp's
spinning wait, what a process got before. Last line: `worst pair / alone (passive): X.XX`.
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


def rollout(out: Path, seed: int, episodes: int, policy: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_WAIT_POLICY": policy.upper(), "PYTHONPATH": str(ROOT)}
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
    parser.add_argument(
        "--policies", default="passive,active", help="OMP_WAIT_POLICY values, comma separated"
    )
    args = parser.parse_args()
    worst: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for policy in args.policies.split(","):
            (alone,) = timed([rollout(out / f"{policy}-alone.jsonl", 0, args.episodes, policy)])
            pair = timed(
                [
                    rollout(out / f"{policy}-pair{k}.jsonl", 100 * (k + 1), args.episodes, policy)
                    for k in range(2)
                ]
            )
            worst[policy] = max(pair) / alone
            print(
                f"OMP_WAIT_POLICY={policy}: alone {alone:.1f} s; two together {pair[0]:.1f} s and {pair[1]:.1f} s; "
                f"slower / alone {worst[policy]:.2f}"
            )
    if "passive" in worst:
        print(f"worst pair / alone (passive): {worst['passive']:.2f}")


if __name__ == "__main__":
    main()
