"""The main job behind `make demo`: the whole loop on the default model, on a CPU, within ten minutes.

Self-play negotiation episodes run in parallel through one shared model and are traced; a short self-play run
trains a LoRA adapter on the served model (a warm start that clones the model's own well-formed turns, then
hierarchical-advantage PPO, half of the groups against the base model); the adapter is swapped into the same
graph and evaluated arena-style against the base model on fresh scenario seeds; the trained adapter replays
the first scenarios for a before/after comparison; a report leads with the answer.
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
from langgraph_omar.run_folder import RunFolder
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.serving.models import DEFAULT_MODEL
from langgraph_omar.trajectory import Episode, write_episodes
from langgraph_omar.trajectory.metadata import episode_metadata

ENV = DEFAULT_ENVIRONMENT
ENV_OPTIONS = {"max_turns": 4}  # two moves each: an offer can be answered and countered
MAX_TOKENS = 24
TEMPERATURE = 0.7
EVAL_SEEDS = 40  # scenario seeds of the evaluation, each played once per seat
EVAL_FIRST_SEED = 1_000_000  # far from the training seeds (iteration i, group g plays seed + i * groups + g)
# The recipe: training/README.md, "The demo" (the 30-minute recipe, shortened); what it measured: docs/experiments.md.
DEMO_SETTINGS: dict[str, dict[str, Any]] = {
    "env": {"name": ENV, "options": ENV_OPTIONS},
    "selfplay": {
        "iterations": 7,
        "episodes_per_iteration": 16,
        "group_size": 4,
        "max_concurrency": 16,
        "temperature": TEMPERATURE,
        "max_tokens": MAX_TOKENS,
        "base_opponent_fraction": 0.5,
        "base_opponent_roles": ["buyer", "seller"],
    },
    "update": {
        "epochs": 1,
        "micro_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "warm_start_iterations": 4,
    },
    "optimizer": {"learning_rate": 5e-4},
    "advantage": {"mode": "hierarchical", "degenerate_penalty": 0.0},
    "degenerate": {"over_length": False},
    "filter": {"min_reward": 0.0},
}


def show(episode: Episode) -> None:
    print(f"--- episode {episode.episode_id}  rewards {episode.rewards}")
    for turn in episode.turns:
        print(f"[{turn.role}] {' '.join(turn.text.split())}")


def demo_config(
    model: str,
    seed: int,
    iterations: int | None = None,
    env_options: dict[str, Any] | None = None,
    advantage: str | None = None,
) -> RunConfig:
    """The demo's training config; `seed` moves the training scenarios and the update's random seed."""
    selfplay = {**DEMO_SETTINGS["selfplay"], "model": model, "seed": seed * 10_000}
    if iterations is not None:
        selfplay["iterations"] = iterations
    settings = {
        **DEMO_SETTINGS,
        "env": {"name": ENV, "options": env_options or ENV_OPTIONS},
        "selfplay": selfplay,
        "update": {**DEMO_SETTINGS["update"], "seed": seed},
        "advantage": {**DEMO_SETTINGS["advantage"], **({"mode": advantage} if advantage else {})},
    }
    return RunConfig.from_dict(settings, source="demo settings")


def run_demo(
    out: Path,
    episodes: int = 8,
    seed: int = 0,
    model: str = DEFAULT_MODEL,
    eval_seeds: int | None = None,
    iterations: int | None = None,
    behaviour_rewards: float = 0.0,
    advantage: str | None = None,
) -> dict[str, Path]:
    """Run the main job into `out`; returns artefact name -> path. seed: the demo seed (training scenarios,
    update seed, and the evaluation's fresh scenario seeds all follow from it). behaviour_rewards: the
    negotiation's MARO behaviour-level rewards in training (evaluation compares outcomes). advantage: the
    PPO iterations' advantage mode (default: the recipe's)."""
    eval_seeds = eval_seeds or EVAL_SEEDS
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    artefacts: dict[str, Path] = {}
    options = {**ENV_OPTIONS, **({"behaviour_rewards": behaviour_rewards} if behaviour_rewards else {})}
    env = load_environment(ENV, options)
    graph = env.build_graph(ChatPolicy(model=model, temperature=TEMPERATURE, max_tokens=MAX_TOKENS))

    def play(seeds: range, adapter: str | None) -> list[Episode]:
        seats = dict.fromkeys(env.roles or (), adapter) if adapter else None
        metadata = [episode_metadata(s, env=ENV, adapter_by_role=seats) for s in seeds]
        played, summary = run_episodes(graph, [env.sample_input(s) for s in seeds], metadata)
        print(summary.line())
        return played

    print(f"1/5 self-play: {episodes} {ENV} episodes in parallel on one shared model (the base model)")
    scenarios = range(EVAL_FIRST_SEED * 2 + seed * 1000, EVAL_FIRST_SEED * 2 + seed * 1000 + episodes)
    before = play(scenarios, None)
    for episode in before[:2]:
        show(episode)
    artefacts["trajectories"] = out / "selfplay.jsonl"
    write_episodes(artefacts["trajectories"], before, append=False)

    config = demo_config(model, seed, iterations, options, advantage)
    mode = config.advantage.mode
    print(f"2/5 training: warm start, then {mode}-advantage PPO on a LoRA adapter of the served model")
    run_dir = out / "train"
    history = run_selfplay(config, run_dir, env)
    for record in history:
        step = "warm start (clone own well-formed turns)" if record.get("warm_start") else "PPO"
        print(
            f"  iteration {record['iteration']} ({step}): mean reward {record['reward_mean']:+.3f}, "
            f"agreement {record.get('env_agreement', 0.0):.2f}, degenerate {record['degenerate_fraction']:.2f}"
        )
    artefacts["run folder"] = run_dir
    adapter = RunFolder(run_dir).adapter

    print(
        f"3/5 swap + evaluation on {eval_seeds} fresh scenario seeds: the trained adapter in one seat, the base "
        "model in the other, seats rotated"
    )
    result = evaluate(
        ENV,
        str(adapter),
        episodes=eval_seeds,
        seed=EVAL_FIRST_SEED + seed * 1000,
        model=model,
        temperature=TEMPERATURE,
        max_tokens=MAX_TOKENS,
        env_options=ENV_OPTIONS,
        max_concurrency=eval_seeds,  # measured: 2.0 s a game at 32 at a time, 2.3 s at 96
        progress=True,
    )

    print(result.headline())

    print("4/5 after training: the trained adapter plays the first scenarios again")
    after = play(
        range(scenarios.start, scenarios.start + 2), SharedPolicy.get(model).ensure_adapter(str(adapter))
    )

    print("5/5 report")
    artefacts.update(
        write_report(
            result, out / "report", run_dir=run_dir, before_after=list(zip(before, after, strict=False))
        )
    )
    print(f"done in {time.perf_counter() - started:.0f} s")
    print(result.verdict())
    print(result.headline())
    print("artefacts:")
    for name, path in artefacts.items():
        print(f"  {name:<14} {path}")
    return artefacts
