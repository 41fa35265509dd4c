"""The self-play loop: one model plays every role, its trajectories train its own adapter, repeat.

Each iteration builds the environment graph with `ChatPolicy(adapter="policy")` for every role (the same
engine and tensors the trainer updates: no weight copy), runs `episodes_per_iteration` episodes (each group
of `group_size` episodes plays one sampled scenario seed and shares a `group_id`), marks degenerate turns,
computes advantages, updates, and bumps the adapter version so the next iteration's records carry it.
With `base_opponent_fraction`, some groups seat the base model (adapter disabled) in one role instead; only
the other seats' turns train.

Everything a run produces lives in one folder:
    RUN/config.yaml  RUN/metrics.jsonl  RUN/trajectories.jsonl  RUN/checkpoints/step-N/  RUN/adapter/
Running the same command again resumes from the newest checkpoint (kill -9 safe); with a fixed seed, on a
CPU, with one episode at a time (max_concurrency 1), the resumed run's adapter equals an uninterrupted one.
Scenario seeds: iteration i, group g plays seed `selfplay.seed + i * groups + g`; evaluate on other seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from accelerate import PartialState
from tqdm.auto import tqdm

from langgraph_omar.atomic import write_atomic
from langgraph_omar.engine import SharedPolicy
from langgraph_omar.rl.advantages import EmaBaseline
from langgraph_omar.rl.batch import build_batch
from langgraph_omar.rl.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    saved_config,
    seed_everything,
)
from langgraph_omar.rl.config import ADVANTAGE_MODES, ALGORITHMS, FilterSettings, RunConfig
from langgraph_omar.rl.degenerate import mark_degenerate
from langgraph_omar.rl.trainer import PPOTrainer
from langgraph_omar.rollout import GraphTarget, load_target, run_episodes
from langgraph_omar.sampling import derive_seed
from langgraph_omar.trajectory import ADAPTER_BY_ROLE, Episode
from langgraph_omar.trajectory_io import write_episodes

ADAPTER = "policy"
TargetFactory = Callable[[Any], GraphTarget]  # chat model -> graph + sample_input


def default_target_factory(config: RunConfig) -> TargetFactory:
    """The environment named by `selfplay.env` (built-in or `module:attribute`), every role on `model`."""
    settings = config.selfplay

    def factory(model: Any) -> GraphTarget:
        kwargs: dict[str, Any] = {}
        if settings.env == "negotiation":
            from langgraph_omar.envs.negotiation import sample_input
            from langgraph_omar.envs.negotiation_rules import NegotiationRules

            kwargs["kind"] = settings.env_kind
            if settings.max_turns is not None:
                kwargs["rules"] = NegotiationRules(max_turns=settings.max_turns)
            target = load_target(settings.env, model=model, **kwargs)
            return GraphTarget(target.graph, lambda seed: sample_input(seed, settings.env_kind))
        return load_target(settings.env, model=model)

    return factory


def episode_plan(
    config: RunConfig, iteration: int, sample_input: Callable[[int], dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Inputs and metadata of one iteration's episodes: groups of `group_size` on one scenario seed each.
    The first `base_opponent_fraction` of the groups seat the base model in one role (`adapter_by_role`)."""
    s = config.selfplay
    groups = s.episodes_per_iteration // s.group_size
    base_groups = round(s.base_opponent_fraction * groups)
    inputs, metadata = [], []
    for g in range(groups):
        seed = s.seed + iteration * groups + g
        scenario_input = sample_input(seed)
        scenario_id = str((scenario_input.get("scenario") or {}).get("id", seed))
        seats: dict[str, Any] = {}
        if g < base_groups:  # the base role rotates over the groups and the iterations
            roles = s.base_opponent_roles
            seats = {ADAPTER_BY_ROLE: {roles[(iteration * base_groups + g) % len(roles)]: None}}
        for j in range(s.group_size):
            inputs.append(scenario_input)
            metadata.append(
                seats
                | {
                    "episode_id": f"it{iteration:05d}-g{g:04d}-e{j:03d}",
                    "group_id": f"it{iteration:05d}-g{g:04d}",
                    "scenario_id": scenario_id,
                    "seed": seed,
                    "sampling_seed": derive_seed(s.seed, iteration, g, j),
                    "baseline_key": f"{s.env}:{s.env_kind}",  # SPIRAL's EMA baseline: per game and role
                }
            )
    return inputs, metadata


def rollout_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    """Mean reward (overall and per role), episode and token counts, and the env's numeric metrics."""
    ok = [e for e in episodes if e.status == "ok"]
    rewards: dict[str, list[float]] = defaultdict(list)
    env_metrics: dict[str, list[float]] = defaultdict(list)
    for episode in ok:
        for role, reward in episode.rewards.items():
            if role not in episode.other_seats:  # the policy's own rewards
                rewards[role].append(reward)
        for name, value in (episode.metadata.get("metrics") or {}).items():
            if isinstance(value, (bool, int, float)) and math.isfinite(float(value)):
                env_metrics[name].append(float(value))
    all_rewards = [r for values in rewards.values() for r in values]
    metrics = {
        "episodes": float(len(episodes)),
        "failed_episodes_rollout": float(len(episodes) - len(ok)),
        "reward_mean": sum(all_rewards) / max(len(all_rewards), 1),
        "turns": float(sum(len(e.turns) for e in episodes)),
        "generated_tokens": float(sum(len(t.completion_ids) for e in episodes for t in e.turns)),
    }
    metrics.update({f"reward_{role}": sum(v) / len(v) for role, v in rewards.items()})
    metrics.update({f"env_{name}": sum(v) / len(v) for name, v in env_metrics.items()})
    return metrics


class MetricsLog:
    """metrics.jsonl: one JSON line per iteration, appended with one write + fsync; TensorBoard when present."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.tensorboard: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:  # tensorboard is optional
            pass

    def keep_before(self, iteration: int) -> None:
        """Drop lines of iterations >= `iteration` (written after the checkpoint a resume starts from)."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line)["iteration"] < iteration:
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line of a killed run
        write_atomic(self.path, "".join(kept))

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        if self.tensorboard is not None:
            for name, value in record.items():
                if isinstance(value, (int, float)) and name != "iteration":
                    self.tensorboard.add_scalar(name, value, record["iteration"])
            self.tensorboard.flush()


def _check_resumable(checkpoint: Path, config: RunConfig) -> None:
    saved = saved_config(checkpoint)
    current = config.to_dict()
    saved.get("selfplay", {}).pop("iterations", None)  # extending a run is allowed
    current["selfplay"].pop("iterations")
    changed = sorted(
        f"{section}.{key}"
        for section, values in current.items()
        for key, value in values.items()
        if saved.get(section, {}).get(key, value) != value
    )
    if changed:
        raise CheckpointError(
            f"{checkpoint} was trained with a different config ({', '.join(changed[:5])}); use a new --out"
        )


def export_adapter(trainer: PPOTrainer, run_dir: Path) -> Path:
    """Save the current adapter to RUN/adapter (atomically), loadable with ChatPolicy(adapter=...)."""
    target = run_dir / "adapter"
    tmp = Path(tempfile.mkdtemp(prefix=".adapter-", dir=run_dir))
    trainer.module.peft_model.save_pretrained(str(tmp), selected_adapters=[trainer.adapter_name])
    nested = tmp / trainer.adapter_name
    source = nested if nested.is_dir() else tmp
    old = run_dir / ".adapter-old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(source, target)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return target


def behaviour_cloning_filter(config: RunConfig, iteration: int) -> FilterSettings | None:
    """Which turns iteration `iteration` clones: during the warm start every well-formed one (of a role's
    episodes with reward >= `filter.min_reward`, when set), with `algo: filtered-bc` the `filter` section's;
    None: a PPO update."""
    if (
        iteration < config.update.warm_start_iterations
    ):  # every episode of every group, degenerate turns dropped
        return FilterSettings(top_fraction=1.0, min_reward=config.filter.min_reward)
    return config.filter if config.update.algo == "filtered-bc" else None


def _this_process(
    inputs: list[dict[str, Any]], metadata: list[dict[str, Any]], process: PartialState
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Under several processes, each plays whole groups: group k goes to process k mod N."""
    if process.num_processes == 1:
        return inputs, metadata
    groups = sorted({m["group_id"] for m in metadata})
    mine = {g for k, g in enumerate(groups) if k % process.num_processes == process.process_index}
    keep = [i for i, m in enumerate(metadata) if m["group_id"] in mine]
    return [inputs[i] for i in keep], [metadata[i] for i in keep]


def _rollout(
    target: GraphTarget,
    inputs: list[dict[str, Any]],
    metadata: list[dict[str, Any]],
    max_concurrency: int,
    progress: bool,
) -> tuple[list[Episode], float]:
    """Run the episodes. Every call samples from its episode's `sampling_seed`, whatever the batch; with
    max_concurrency 1 the batches themselves are fixed too (bit-exact logits, hence an exact resume)."""
    if max_concurrency > 1:
        episodes, summary = run_episodes(
            target.graph, inputs, metadata, max_concurrency=max_concurrency, progress=progress
        )
        return episodes, summary.seconds
    episodes, seconds = [], 0.0
    for one_input, meta in tqdm(
        list(zip(inputs, metadata, strict=True)), desc="episodes", disable=not progress, leave=False
    ):
        ran, summary = run_episodes(target.graph, [one_input], [meta], max_concurrency=1, progress=False)
        episodes.extend(ran)
        seconds += summary.seconds
    return episodes, seconds


def run_selfplay(
    config: RunConfig,
    run_dir: str | Path,
    *,
    policy: SharedPolicy | None = None,
    target_factory: TargetFactory | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train `config.selfplay.iterations` iterations (resuming from RUN's newest checkpoint); returns the
    metrics of the iterations run now."""
    from langgraph_omar.chat_model import ChatPolicy

    s = config.selfplay
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # one process, or one of several under `accelerate launch`
    process = PartialState(cpu=policy.device.type == "cpu") if policy is not None else PartialState()
    main = process.is_main_process
    policy = policy or SharedPolicy.get(s.model, device=process.device)
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None:
        _check_resumable(checkpoint, config)
    else:
        seed_everything(config.update.seed)
    trainer = PPOTrainer(policy, config, ADAPTER)
    ema = EmaBaseline(decay=config.advantage.ema_decay)
    start = load_checkpoint(checkpoint, trainer, ema) if checkpoint is not None else 0
    log = MetricsLog(run_dir) if main else None
    if log is not None:
        write_atomic(run_dir / "config.yaml", config.to_yaml())
        log.keep_before(start)
    chat = ChatPolicy(
        model=policy.model_name,
        adapter=ADAPTER,
        temperature=s.temperature,
        top_p=s.top_p,
        max_tokens=s.max_tokens,
    )
    target = (target_factory or default_target_factory(config))(chat)
    history, started, longest = [], time.monotonic(), 0.0
    for iteration in tqdm(
        range(start, s.iterations), desc="iterations", disable=not progress, initial=start, total=s.iterations
    ):
        iteration_started = time.monotonic()
        inputs, metadata = _this_process(*episode_plan(config, iteration, target.sample_input), process)
        with trainer.serving():
            episodes, rollout_seconds = _rollout(target, inputs, metadata, s.max_concurrency, progress)
        for episode, meta in zip(episodes, metadata, strict=True):
            episode.metadata.update(meta)
            episode.metadata["iteration"] = iteration
        record: dict[str, Any] = {"iteration": iteration, "rollout_seconds": rollout_seconds}
        record.update(rollout_metrics(episodes))
        record.update(mark_degenerate(episodes, config.degenerate))
        write_episodes(run_dir / "trajectories.jsonl", episodes)
        bc_filter = behaviour_cloning_filter(config, iteration)
        record["warm_start"] = float(iteration < config.update.warm_start_iterations)
        batch = build_batch(episodes, config.advantage, ema, policy.tokenizer.pad_token_id, bc_filter)
        if batch is None:  # nothing to learn from this time; the adapter stays as it is
            record["skipped_update"] = 1.0
        else:
            record.update(trainer.update(batch, episodes))
        if log is not None:  # the main process's own numbers (each process trains on its own episodes)
            log.append(record)
        history.append(record)
        done = iteration + 1
        now = time.monotonic()
        longest = max(longest, now - iteration_started)
        out_of_time = s.max_minutes is not None and now + longest - started > 60 * s.max_minutes
        if done % s.checkpoint_every == 0 or done == s.iterations or out_of_time:
            process.wait_for_everyone()
            if main:  # DDP keeps the adapters equal on every process
                save_checkpoint(run_dir, done, trainer, ema, keep=s.keep_checkpoints)
            process.wait_for_everyone()
        if out_of_time:
            break
    if main:
        export_adapter(trainer, run_dir)
    return history


# ---- the command line ---------------------------------------------------------------------------------------

_OVERRIDES = {  # argparse dest -> config key
    "env": "selfplay.env",
    "env_kind": "selfplay.env_kind",
    "iterations": "selfplay.iterations",
    "episodes_per_iteration": "selfplay.episodes_per_iteration",
    "group_size": "selfplay.group_size",
    "max_concurrency": "selfplay.max_concurrency",
    "max_turns": "selfplay.max_turns",
    "max_tokens": "selfplay.max_tokens",
    "temperature": "selfplay.temperature",
    "model": "selfplay.model",
    "seed": "selfplay.seed",
    "advantage": "advantage.mode",
    "algo": "update.algo",
    "epochs": "update.epochs",
    "warm_start_iterations": "update.warm_start_iterations",
    "kl_coef": "update.kl_coef",
    "learning_rate": "optimizer.learning_rate",
    "max_minutes": "selfplay.max_minutes",
    "base_opponent_fraction": "selfplay.base_opponent_fraction",
}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """`omar train ENV ...`: flags override the --config YAML, which overrides the defaults."""
    parser.add_argument("env", help="negotiation | sotopia | werewolf | module:attribute")
    parser.add_argument("--out", required=True, help="run folder (config, metrics, trajectories, adapters)")
    parser.add_argument("--config", default=None, help="YAML config (see training/negotiation.yaml)")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--episodes-per-iteration", type=int, default=None)
    parser.add_argument("--group-size", type=int, default=None, help="episodes per scenario seed (one group)")
    parser.add_argument("--advantage", choices=ADVANTAGE_MODES, default=None)
    parser.add_argument("--algo", choices=ALGORITHMS, default=None)
    parser.add_argument("--env-kind", default=None, help="negotiation: price or split")
    parser.add_argument("--max-turns", type=int, default=None, help="messages per episode")
    parser.add_argument("--max-tokens", type=int, default=None, help="new tokens per turn")
    parser.add_argument("--max-concurrency", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument(
        "--warm-start-iterations", type=int, default=None, help="first iterations clone well-formed turns"
    )
    parser.add_argument("--kl-coef", type=float, default=None)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--model", default=None, help="served model (default: smollm2-135m-instruct)")
    parser.add_argument("--seed", type=int, default=None, help="first scenario seed")
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="wall-time budget: no iteration starts that would pass it",
    )
    parser.add_argument(
        "--base-opponent-fraction",
        type=float,
        default=None,
        help="share of groups with the base model in one role (roles: selfplay.base_opponent_roles)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    base = RunConfig.from_yaml(args.config) if args.config else RunConfig()
    return base.with_overrides({key: getattr(args, dest, None) for dest, key in _OVERRIDES.items()})


def run_train(args: argparse.Namespace) -> None:
    config = config_from_args(args)
    history = run_selfplay(config, args.out, progress=not args.no_progress)
    if history:
        last = history[-1]
        print(
            f"trained {len(history)} iteration(s); last: reward_mean {last['reward_mean']:.3f}, "
            f"degenerate {last['degenerate_fraction']:.2f}, "
            f"logprob_mismatch {last.get('logprob_mismatch', float('nan')):.4f}"
        )
    print(f"adapter: {Path(args.out) / 'adapter'}")
