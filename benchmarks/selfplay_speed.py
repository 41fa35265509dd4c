"""One self-play iteration of the demo recipe (16 episodes, then a PPO update) on today's float32 settings and
on the new defaults, side by side in one run.

    python benchmarks/selfplay_speed.py [--model smollm2-135m-instruct] [--repeats 1] [--profile]

Each path runs in its own process (a fresh engine, accelerate state and allocator), today's first, then the
new one, `--repeats` times alternating; the iteration is `run_selfplay` with `iterations: 1` and the warm start
off, so the update is the recipe's PPO update (the demo's first four iterations clone turns instead), over
every turn (`skip_zero_advantage: false`: a first iteration's rewards are mostly equal, which would leave
nearly nothing to train).
- today: `prefill_dtype: float32`, `decode_dtype: float32`, `update.mixed_precision: no`,
  `update.old_logprobs: rollout`, `update.shared_prefix: false`: what the engine and trainer did before
  precision per phase and shared prefixes (engine improvements without a setting, such as continuous batching
  and log-probabilities at completion tokens only, are in both paths: the ratio understates them).
- new: every setting left at `auto` (see `langgraph_omar/serving/precision.py`), so the path picks up
  whatever the engine and trainer do by default.
Printed per path: episodes per minute (rollout), update tokens per second (trained tokens over the update's
wall time, the recompute of old log-probabilities included) and `logprob_mismatch`; last line
`speedup: X.XX` (today's rollout + update seconds over the new path's, medians over the repeats).

`--profile` adds, per path, where the iteration's seconds go, from wall-clock timers wrapped around the
engine's and trainer's functions (the engine's worker thread and the trainer run one at a time, so the
sums do not overlap): prefill forwards, decode-step forwards, sampling, grammar masks, the rest of
`decode_batch` (Python per row: bookkeeping, stop strings, prefix-cache stores), what the rollout spends outside
the engine (graph, tracing, waiting to batch), and the update's transformer forward, log-probability chunks,
backward, optimizer steps and recompute pass.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

PATHS = {
    "today": {
        "selfplay": {"prefill_dtype": "float32", "decode_dtype": "float32"},
        "update": {"mixed_precision": "no", "old_logprobs": "rollout", "shared_prefix": False},
    },
    "new": {"selfplay": {}, "update": {}},
}
PROFILE_ROWS = [
    ("prefill forward", "rollout"),
    ("decode-step forward", "rollout"),
    ("sampling", "rollout"),
    ("grammar masks", "rollout"),
    ("decode_batch Python (per row, stops, cache)", "rollout"),
    ("outside the engine (graph, tracing, batching wait)", "rollout"),
    ("recompute old log-probs (no grad)", "update"),
    ("transformer forward", "update"),
    ("log-prob chunks", "update"),
    ("backward", "update"),
    ("optimizer step", "update"),
    ("update, other", "update"),
]


class Timers:
    """Seconds per label, summed over calls; `wrap` replaces `owner.name` by a timed version."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, owner: Any, name: str, label: Callable[..., str | None] | str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                key = label(*args, **kwargs) if callable(label) else label
                if key:
                    self.seconds[key] += time.perf_counter() - started

        setattr(owner, name, timed)


def install_timers() -> Timers:
    from accelerate import Accelerator

    from langgraph_omar.rl import trainer
    from langgraph_omar.serving import decoding, engine

    timers = Timers()
    timers.wrap(
        decoding,
        "next_logits",
        lambda model, ids, *a, **k: "prefill forward" if ids.shape[1] > 1 else "decode-step forward",
    )
    timers.wrap(decoding, "sample_next", "sampling")
    timers.wrap(decoding, "allowed_tokens", "grammar masks")
    timers.wrap(engine.SharedPolicy, "_decode", "decode_batch total")  # a running batch, start to last row
    timers.wrap(trainer.PolicyWithValueHead, "forward", "transformer forward")
    timers.wrap(trainer, "token_logprobs_and_entropy_from_hidden", "log-prob chunks")
    timers.wrap(Accelerator, "backward", "backward")
    timers.wrap(trainer.PPOTrainer, "_optimizer_step", "optimizer step")
    timers.wrap(trainer.PPOTrainer, "_recompute_old", "recompute old log-probs (no grad)")
    return timers


def profile_rows(timers: Timers, record: dict[str, Any]) -> dict[str, float]:
    """The table's rows from the raw timers; the recompute pass's own forward and chunks are moved out of
    the training forward's rows (they ran inside it)."""
    t = dict(timers.seconds)
    rows = {name: t.get(name, 0.0) for name, _ in PROFILE_ROWS}
    engine_parts = sum(
        rows[k] for k in ("prefill forward", "decode-step forward", "sampling", "grammar masks")
    )
    rows["decode_batch Python (per row, stops, cache)"] = t.get("decode_batch total", 0.0) - engine_parts
    rows["outside the engine (graph, tracing, batching wait)"] = record["rollout_seconds"] - t.get(
        "decode_batch total", 0.0
    )
    recompute = rows["recompute old log-probs (no grad)"]
    if recompute:  # its forwards and chunks were counted in their rows too: take the recompute's share out
        share = recompute / max(rows["transformer forward"] + rows["log-prob chunks"], 1e-9)
        share = min(share, 1.0)
        rows["transformer forward"] *= 1 - share
        rows["log-prob chunks"] *= 1 - share
    trained = sum(rows[k] for k in ("recompute old log-probs (no grad)", "transformer forward"))
    trained += sum(rows[k] for k in ("log-prob chunks", "backward", "optimizer step"))
    rows["update, other"] = record.get("update_seconds", 0.0) - trained
    return rows


def run_path(path: str, model: str, profile: bool) -> dict[str, Any]:
    """One iteration on `path`'s settings in this process; returns its metrics record (+ profile)."""
    from langgraph_omar.demo import ENV, ENV_OPTIONS, demo_config
    from langgraph_omar.envs.registry import load_environment
    from langgraph_omar.rl.config import RunConfig
    from langgraph_omar.rl.selfplay import run_selfplay
    from langgraph_omar.serving.engine import SharedPolicy
    from langgraph_omar.serving.precision import mixed_precision

    timers = install_timers() if profile else None
    settings = demo_config(model, seed=0, iterations=1).to_dict()
    settings["update"]["warm_start_iterations"] = 0  # the recipe's PPO update, not the warm start's cloning
    # every turn trains: the base model's first rewards are mostly equal (no deal), so PPO would skip nearly
    # every turn and the update would measure nothing; later iterations train most turns
    settings["update"]["skip_zero_advantage"] = False
    settings["selfplay"]["log_with"] = []
    for section, values in PATHS[path].items():
        settings[section].update(values)
    config = RunConfig.from_dict(settings, source=f"{path} settings")
    s = config.selfplay
    policy = SharedPolicy.load(s.model, device="cpu", dtype=s.decode_dtype, prefill_dtype=s.prefill_dtype)
    SharedPolicy.register(policy)
    with tempfile.TemporaryDirectory() as run_dir:
        (record,) = run_selfplay(
            config, run_dir, load_environment(ENV, ENV_OPTIONS), policy=policy, progress=False
        )
    precision = mixed_precision(config.update.mixed_precision, policy.device)
    record["update_mixed_precision"] = precision
    recompute = config.update.old_logprobs == "recompute" or (
        config.update.old_logprobs == "auto" and precision != "no"
    )
    record["old_logprobs"] = "recomputed" if recompute else "rollout"
    record["prefill_dtype"] = str(policy.prefill_dtype).removeprefix("torch.")
    record["decode_dtype"] = str(policy.model.get_input_embeddings().weight.dtype).removeprefix("torch.")
    if timers is not None:
        record["profile"] = profile_rows(timers, record)
    return record


def child(path: str, model: str, profile: bool) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", path, "--model", model] + (
        ["--profile"] if profile else []
    )
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        sys.exit(f"{path} path failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def seconds(record: dict[str, Any]) -> float:
    return float(record["rollout_seconds"] + record["update_seconds"])


def print_profile(records: dict[str, dict[str, Any]]) -> None:
    print("\nwhere one iteration's seconds go (last repeat):")
    print(f"| phase | part | {' | '.join(f'{p} s' for p in records)} |")
    print("| --- | --- |" + " --- |" * len(records))
    for name, part in PROFILE_ROWS:
        cells = " | ".join(f"{r['profile'][name]:.1f}" for r in records.values())
        print(f"| {part} | {name} | {cells} |")
    totals = " | ".join(f"{seconds(r):.1f}" for r in records.values())
    print(f"| total | rollout + update | {totals} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each path (medians)")
    parser.add_argument("--profile", action="store_true", help="print where each path's seconds go")
    parser.add_argument("--child", choices=sorted(PATHS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        record = run_path(args.child, args.model, args.profile)
        print(json.dumps({k: v for k, v in record.items() if isinstance(v, (int, float, str, dict))}))
        return
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PATHS}
    for _ in range(args.repeats):
        for path in PATHS:
            runs[path].append(child(path, args.model, args.profile))
    torch_threads = os.environ.get("OMP_NUM_THREADS", "default")
    print(
        f"model {args.model}, one demo iteration (16 episodes + PPO update), OMP_NUM_THREADS={torch_threads}"
    )
    for path, records in runs.items():
        last = records[-1]
        rollout = statistics.median(r["rollout_seconds"] for r in records)
        update = statistics.median(r["update_seconds"] for r in records)
        tokens = statistics.median(r["train_tokens_per_s"] for r in records)
        print(
            f"{path:>5}: prefill {last['prefill_dtype']}, decode {last['decode_dtype']}, update "
            f"{last['update_mixed_precision']}, old log-probs {last['old_logprobs']}: "
            f"{16 / rollout * 60:.1f} episodes/min ({rollout:.1f} s), update {tokens:.0f} tokens/s ({update:.1f} s, "
            f"{last['trained_tokens']:.0f} tokens), logprob_mismatch {last['logprob_mismatch']:.4f}"
            + (f", tis_weight_mean {last['tis_weight_mean']:.3f}" if "tis_weight_mean" in last else "")
        )
    if args.profile:
        print_profile({path: records[-1] for path, records in runs.items()})
    today = statistics.median(seconds(r) for r in runs["today"])
    new = statistics.median(seconds(r) for r in runs["new"])
    print(f"speedup: {today / new:.2f}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
