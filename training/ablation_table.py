"""Print the advantage ablation's table (markdown) from `omar eval` folders named RUNS/MODE-sSEED-eval:
`python training/ablation_table.py runs/ablation/*-eval` (training/ablation.sh runs them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def interval(stat: dict[str, float]) -> str:
    return f"{stat['mean']:+.3f} [{stat['low']:+.3f}, {stat['high']:+.3f}]"


def row(eval_dir: Path) -> str:
    result = json.loads((eval_dir / "eval.json").read_text())
    mode, _, seed = eval_dir.name.removesuffix("-eval").rpartition("-s")
    reward = {c["seat"]: c for c in result["comparisons"] if c["metric"] == "reward"}
    agreement = next(m for m in result["game_metrics"] if m["metric"] == "agreement" and m["seat"] == "all")
    cells = [f"`{mode}`", seed, interval(reward["all"]["difference"])]
    cells += [interval(reward[seat]["difference"]) for seat in result["seats"]]
    cells += [f"{agreement['value']['mean']:.2f}", str(reward["all"]["pairs"])]
    return "| " + " | ".join(cells) + " |"


def main(eval_dirs: list[str]) -> None:
    done = [Path(d) for d in eval_dirs if (Path(d) / "eval.json").is_file()]
    if not done:
        sys.exit("ablation_table: no eval.json in the given folders")
    seats = json.loads((done[0] / "eval.json").read_text())["seats"]
    header = ["`--advantage`", "training seed", "trained - base, both seats"]
    header += [f"as {seat}" for seat in seats] + ["agreement", "scenario seeds"]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for eval_dir in sorted(done):
        print(row(eval_dir))


if __name__ == "__main__":
    main(sys.argv[1:])
