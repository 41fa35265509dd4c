"""Print the advantage ablation's tables (markdown) from `omar eval` folders named RUNS/MODE-sSEED-eval:
`python training/ablation_table.py runs/ablation/*-eval` (training/ablation.sh runs them).

The first table has one row per trained adapter. The second pools each mode's training seeds: per scenario
seed, the mean over training seeds of the paired difference trained - base (both seats), and that mean minus
the reference mode's (`hierarchical`), seed by seed. Its intervals are t intervals over the scenario seeds:
they hold the evaluation's noise, not the spread between training seeds, which the first table shows.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from langgraph_omar.eval.stats import Game, Interval, mean_by_seed, mean_interval, paired_differences

REFERENCE_MODE = "hierarchical"
MODE_ORDER = ("hierarchical", "grpo", "rae", "hierarchical-critic")  # training/ablation.sh's


def interval(stat: Mapping[str, float] | Interval | None) -> str:
    if stat is None:
        return "n/a"
    values = stat.to_dict() if isinstance(stat, Interval) else stat
    return f"{values['mean']:+.3f} [{values['low']:+.3f}, {values['high']:+.3f}]"


def mode_and_seed(eval_dir: Path) -> tuple[str, str]:
    mode, _, seed = eval_dir.name.removesuffix("-eval").rpartition("-s")
    return mode, seed


def table_order(eval_dir: Path) -> tuple[int, str, str]:
    mode, seed = mode_and_seed(eval_dir)
    return (MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER), mode, seed)


def cell_row(eval_dir: Path, result: Mapping[str, Any]) -> list[str]:
    reward = {c["seat"]: c for c in result["comparisons"] if c["metric"] == "reward"}
    agreement = next(m for m in result["game_metrics"] if m["metric"] == "agreement" and m["seat"] == "all")
    mode, seed = mode_and_seed(eval_dir)
    cells = [f"`{mode}`", seed, interval(reward["all"]["difference"])]
    cells += [interval(reward[seat]["difference"]) for seat in result["seats"]]
    return cells + [f"{agreement['value']['mean']:.2f}", str(reward["all"]["pairs"])]


def mode_rows(results: Mapping[Path, Mapping[str, Any]]) -> list[list[str]]:
    by_mode: dict[str, list[dict[int, float]]] = defaultdict(list)
    for eval_dir, result in results.items():
        games = [Game(**game) for game in result["games"]]
        by_mode[mode_and_seed(eval_dir)[0]].append(paired_differences(games, result["seats"], "reward"))
    pooled = {mode: mean_by_seed(diffs) for mode, diffs in by_mode.items()}
    reference = pooled.get(REFERENCE_MODE)
    rows = []
    for mode, means in pooled.items():
        versus = None
        if reference is not None and mode != REFERENCE_MODE:
            versus = mean_interval([means[s] - reference[s] for s in means if s in reference])
        rows.append(
            [
                f"`{mode}`",
                str(len(by_mode[mode])),
                interval(mean_interval(list(means.values()))),
                interval(versus) if mode != REFERENCE_MODE else "-",
            ]
        )
    return rows


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def main(eval_dirs: Sequence[str]) -> None:
    done = [Path(d) for d in eval_dirs if (Path(d) / "eval.json").is_file()]
    if not done:
        sys.exit("ablation_table: no eval.json in the given folders")
    results = {d: json.loads((d / "eval.json").read_text()) for d in sorted(done, key=table_order)}
    seats = next(iter(results.values()))["seats"]
    header = ["`--advantage`", "training seed", "trained - base, both seats"]
    header += [f"as {seat}" for seat in seats] + ["agreement", "scenario seeds"]
    print(markdown(header, [cell_row(d, r) for d, r in results.items()]))
    print()
    pooled_header = [
        "`--advantage`",
        "training seeds",
        "trained - base, mean over training seeds",
        f"minus `{REFERENCE_MODE}`",
    ]
    print(markdown(pooled_header, mode_rows(results)))


if __name__ == "__main__":
    main(sys.argv[1:])
