"""The main job behind `make demo`: the whole loop on the default model, on a CPU, in a few minutes.

Self-play negotiation episodes run in parallel through one shared model and are traced; the trajectories are
exported; a short RL run trains a LoRA adapter on the served model; the adapter is swapped into the same
graphs and evaluated arena-style against the base model; a report is written.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from langgraph_omar.chat_model import ChatPolicy
from langgraph_omar.envs.registry import DEFAULT_ENVIRONMENT, load_environment
from langgraph_omar.eval.arena import evaluate
from langgraph_omar.eval.report import write_report
from langgraph_omar.rl.config import RunConfig
from langgraph_omar.rl.selfplay import run_selfplay
from langgraph_omar.rollout import run_episodes
from langgraph_omar.serving.models import DEFAULT_MODEL
from langgraph_omar.trajectory import Episode, write_episodes

ENV = DEFAULT_ENVIRONMENT
ENV_OPTIONS = {"max_turns": 4}  # short games: the demo runs on 2 CPU cores in a few minutes
DEMO_SETTINGS: dict[str, dict[str, Any]] = {
    "env": {"name": ENV, "options": ENV_OPTIONS},
    "selfplay": {
        "iterations": 2,
        "episodes_per_iteration": 8,
        "group_size": 2,
        "max_tokens": 32,
    },
    "update": {"micro_batch_size": 8},
    "optimizer": {"learning_rate": 2e-4},
    # The untrained model rarely closes a deal in 4 turns, so the outcome reward alone would leave nothing to
    # learn from here; off-format and empty turns get a penalty (a dense signal), while cut-off replies are
    # not penalised: 32 tokens cut most of them, and the parser reads an action line anywhere in the text.
    "advantage": {"degenerate_penalty": 0.3},
    "degenerate": {"over_length": False},
}


def show(episode: Episode) -> None:
    print(f"--- episode {episode.episode_id}  rewards {episode.rewards}")
    for turn in episode.turns:
        print(f"[{turn.role}] {' '.join(turn.text.split())}")


def run_demo(out: Path, episodes: int = 8, seed: int = 0, model: str = DEFAULT_MODEL) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    artefacts: dict[str, Path] = {}

    print(f"1/4 self-play: {episodes} {ENV} episodes in parallel on one shared model")
    env = load_environment(ENV, ENV_OPTIONS)
    graph = env.build_graph(ChatPolicy(model=model, temperature=0.7, max_tokens=32))
    seeds = range(seed, seed + episodes)
    played, summary = run_episodes(
        graph,
        [env.sample_input(s) for s in seeds],
        [{"seed": s, "sampling_seed": s, "scenario_id": f"{ENV}-{s}"} for s in seeds],
    )
    for episode in played[:2]:
        show(episode)
    print(summary.line())
    artefacts["trajectories"] = out / "selfplay.jsonl"
    write_episodes(artefacts["trajectories"], played, append=False)

    print("2/4 training: hierarchical-advantage PPO on a LoRA adapter of the served model")
    run_dir = out / "train"
    settings = {**DEMO_SETTINGS, "selfplay": {**DEMO_SETTINGS["selfplay"], "model": model}}
    config = RunConfig.from_dict(settings, source="demo settings")
    history = run_selfplay(config, run_dir, env)
    for record in history:
        print(f"  iteration {record['iteration']}: mean reward {record['reward_mean']:.3f}")
    artefacts["run folder"] = run_dir
    adapter = run_dir / "adapter"

    print(
        "3/4 swap + evaluation: the trained adapter in one seat, the base model in the other, seats rotated"
    )
    result = evaluate(
        ENV,
        str(adapter),
        episodes=4,
        seed=1000,
        model=model,
        max_tokens=32,
        env_options=ENV_OPTIONS,
        progress=True,
    )
    print(result.headline())

    print("4/4 report")
    artefacts.update(write_report(result, out / "report", run_dir=run_dir))
    print(f"done in {time.perf_counter() - started:.0f} s; artefacts:")
    for name, path in artefacts.items():
        print(f"  {name:<14} {path}")
    return artefacts
