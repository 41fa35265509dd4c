"""Arena evaluation of a trained adapter on held-out negotiation scenarios.

    python training/arena_eval.py --adapter runs/negotiation/adapter --seeds 40 --config training/negotiation.yaml

For each held-out scenario seed (from --first-seed, far from the training seeds), two episodes: the trained
adapter plays the buyer against the untrained base model as the seller, then the roles swap. In self-play the
two sides' shares cancel out; here the per-seed score is d = mean over the two episodes of
(trained role's reward - base role's reward). Prints the mean of d with a 95% confidence interval
(mean +- 1.96 sd / sqrt(n) over seeds), the agreement rate, and writes everything to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from langgraph_omar.chat_model import ChatPolicy
from langgraph_omar.envs.negotiation import build_graph, sample_input
from langgraph_omar.envs.negotiation_rules import NegotiationRules
from langgraph_omar.rl.config import RunConfig
from langgraph_omar.rollout import run_episodes


def confidence_interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high) of a normal-approximation 95% interval of the mean; sd is the sample sd."""
    mean = statistics.fmean(values)
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.inf
    return mean, mean - half, mean + half


def evaluate(adapter: str | None, config: RunConfig, seeds: list[int], concurrency: int) -> dict[str, Any]:
    s = config.selfplay
    rules = NegotiationRules(max_turns=s.max_turns) if s.max_turns else None

    def chat(adapter_spec: str | None) -> ChatPolicy:
        return ChatPolicy(
            model=s.model, adapter=adapter_spec, temperature=s.temperature, max_tokens=s.max_tokens
        )

    trained, base = chat(adapter), chat(None)
    roles = ("buyer", "seller")
    per_seed: dict[int, list[float]] = {seed: [] for seed in seeds}
    rows, agreements = [], 0
    for trained_role in roles:
        base_role = roles[1 - roles.index(trained_role)]
        graph = build_graph(kind=s.env_kind, rules=rules, models={trained_role: trained, base_role: base})
        inputs = [sample_input(seed, s.env_kind) for seed in seeds]
        metadata = [{"episode_id": f"arena-{trained_role}-{seed}", "seed": seed} for seed in seeds]
        episodes, _ = run_episodes(graph, inputs, metadata, max_concurrency=concurrency, progress=True)
        for seed, episode in zip(seeds, episodes, strict=True):
            if episode.status != "ok":
                raise RuntimeError(f"arena episode {episode.episode_id} failed: {episode.error}")
            diff = episode.rewards[trained_role] - episode.rewards[base_role]
            per_seed[seed].append(diff)
            agreements += bool((episode.metadata.get("metrics") or {}).get("agreement"))
            rows.append(
                {"seed": seed, "trained_role": trained_role, "rewards": episode.rewards, "diff": diff}
            )
    scores = [statistics.fmean(diffs) for diffs in per_seed.values()]
    mean, low, high = confidence_interval(scores)
    return {
        "adapter": adapter,
        "seeds": len(seeds),
        "episodes": len(rows),
        "agreement_rate": agreements / len(rows),
        "mean_diff": mean,
        "ci95": [low, high],
        "episodes_detail": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", required=True, help="adapter folder, or 'none' for base vs base")
    parser.add_argument("--config", default=None, help="the training YAML (sampling and rules settings)")
    parser.add_argument("--seeds", type=int, default=40, help="held-out scenarios (2 episodes each)")
    parser.add_argument("--first-seed", type=int, default=1_000_000)
    parser.add_argument("--max-concurrency", type=int, default=16)
    parser.add_argument("--out", default=None, help="JSON report (default: next to the adapter)")
    args = parser.parse_args()
    config = RunConfig.from_yaml(args.config) if args.config else RunConfig()
    adapter = None if args.adapter == "none" else args.adapter
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    report = evaluate(adapter, config, seeds, args.max_concurrency)
    low, high = report["ci95"]
    print(
        f"arena on {report['seeds']} held-out seeds ({report['episodes']} episodes, roles rotated): "
        f"trained - base reward = {report['mean_diff']:+.4f}, 95% CI [{low:+.4f}, {high:+.4f}], "
        f"agreement rate {report['agreement_rate']:.2f}"
    )
    out = Path(args.out) if args.out else Path(args.adapter if adapter else ".") / ".." / "arena.json"
    fd, tmp = tempfile.mkstemp(prefix=".arena-", dir=out.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(report, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    print(f"report: {out.resolve()}")


if __name__ == "__main__":
    main()
