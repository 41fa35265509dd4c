"""The critic at the first PPO iterations, with and without fitting its value head during the warm start.

Runs the same short critic-mode self-play (same seeds) without and with `update.value_fit` and prints, per
PPO iteration, `value_explained_variance` (of the values the advantages are computed from, against their value
targets; 0 for a zero head) and the value loss. The fit's held-out explained variance and chosen ridge strength are printed for the warm start.

    PYTHONPATH=.:tests python benchmarks/critic_value_fit.py --env selfplay_toy:toy_graph --model tiny
    python benchmarks/critic_value_fit.py --env negotiation --config training/negotiation.yaml \
        --warm-start 2 --iterations 4                      # the default model: minutes per iteration
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from typing import Any

from langgraph_omar.envs.registry import load_environment
from langgraph_omar.rl.config import RunConfig
from langgraph_omar.rl.selfplay import run_selfplay


def run(args: argparse.Namespace, fit: bool, seed: int) -> list[dict[str, Any]]:
    if args.config:
        config = RunConfig.from_yaml(args.config)
    elif args.env == "selfplay_toy:toy_graph":  # the tests' toy and its config (tests/ on the path)
        from selfplay_toy import toy_config

        config = toy_config(seed, args.iterations)
    else:
        config = RunConfig()
    overrides: dict[str, Any] = {
        "advantage.mode": "hierarchical-critic",
        "update.warm_start_iterations": args.warm_start,
        "update.value_fit": fit,
        "update.seed": seed,
        "selfplay.seed": 100_000 * seed,
        "selfplay.iterations": args.iterations,
        "selfplay.max_minutes": None,
        "env.name": args.env,
    }
    if args.model:
        overrides["selfplay.model"] = args.model
    if args.episodes:
        overrides["selfplay.episodes_per_iteration"] = args.episodes
    config = config.with_overrides(overrides)
    policy = None
    if args.model == "tiny":  # the toy's sharpened tiny engine when the tests folder is on the path
        try:
            from selfplay_toy import toy_policy

            policy = toy_policy(seed=0)
        except ImportError:
            from langgraph_omar.testing import tiny_policy

            policy = tiny_policy("tiny")
    env = load_environment(args.env, config.env.options)
    with tempfile.TemporaryDirectory() as run_dir, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_selfplay(config, run_dir, env, policy=policy, progress=False)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="negotiation")
    parser.add_argument("--config", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--episodes", type=int, default=None)
    parser.add_argument("--warm-start", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    print(
        "value_fit       seed iteration  value_explained_variance  value_loss  (warm start: fit EV on held-out episodes, ridge chosen)"
    )
    for fit in (False, True):
        steps = int(fit)
        for seed in args.seeds:
            for r in run(args, fit, seed):
                if r.get("warm_start"):
                    ev = r.get("value_fit_explained_variance_held_out_after", float("nan"))
                    kept = r.get("value_fit_strength", 0)
                    print(
                        f"{steps:15d} {seed:4d} {r['iteration']:9d}  warm start, fit EV {ev:+.3f} (ridge {kept:g})"
                    )
                else:
                    ev, loss = (
                        r.get("value_explained_variance", float("nan")),
                        r.get("value_loss", float("nan")),
                    )
                    print(f"{steps:15d} {seed:4d} {r['iteration']:9d}  {ev:+24.3f}  {loss:10.4f}")


if __name__ == "__main__":
    main()
