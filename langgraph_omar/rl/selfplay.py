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

Under several processes (`torchrun --nproc_per_node N -m langgraph_omar.cli train ...`, or `accelerate launch`
on GPUs) each process plays its share of the groups, every process's episodes are gathered (so each one
builds the same batch and each iteration's metrics count them all), DDP averages the adapter's gradients, and
only the main process writes the run folder. The metrics also go to accelerate's experiment trackers
(`selfplay.log_with`: RUN/logs/ for TensorBoard) and, one line per iteration, to the console.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object
from tqdm.auto import tqdm

from langgraph_omar.atomic import write_atomic
from langgraph_omar.errors import OmarError
from langgraph_omar.rl.advantages import EmaBaseline
from langgraph_omar.rl.alarms import watch_reward_hacking
from langgraph_omar.rl.batch import TrainingBatch, build_batch
from langgraph_omar.rl.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    resume_or_start,
    save_checkpoint,
    saved_config,
    seed_everything,
)
from langgraph_omar.rl.config import FilterSettings, RunConfig
from langgraph_omar.rl.degenerate import mark_degenerate
from langgraph_omar.rl.trainer import PPOTrainer
from langgraph_omar.rollout import run_episodes
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.serving.precision import resolve_dtype
from langgraph_omar.serving.sampling import derive_seed
from langgraph_omar.trajectory import ADAPTER_BY_ROLE, Episode, write_episodes

ADAPTER = "policy"
TRACKER_PROJECT = "langgraph-omar"  # W&B project, MLflow experiment, TensorBoard folder under RUN/logs


class SelfPlayEnvironment(Protocol):
    """What the loop needs of an environment (`langgraph_omar.envs.Environment` has it; `rl` imports none)."""

    name: str

    @property
    def recursion_limit(self) -> int: ...

    def build_graph(self, model: Any, *, judge: Any = None) -> Any: ...

    def sample_input(self, seed: int) -> dict[str, Any]: ...


class TrainingWarning(UserWarning):
    """An iteration that trained nothing, or a graph that leaves roles unrewarded: said once, with the reason."""


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
                    "baseline_key": config.env.name,  # SPIRAL's EMA baseline: per game and role
                }
            )
    return inputs, metadata


def rollout_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    """Mean reward (overall and per role, of the roles the trained adapter played), episode and token
    counts, and the env's numeric metrics."""
    ok = [e for e in episodes if e.status == "ok"]
    rewards: dict[str, list[float]] = defaultdict(list)
    env_metrics: dict[str, list[float]] = defaultdict(list)
    for episode in ok:
        policy_roles = episode.roles_played_by(ADAPTER)
        for role, reward in episode.rewards.items():
            if role in policy_roles:  # the policy's own rewards
                rewards[role].append(reward)
        for name, value in (episode.metadata.get("metrics") or {}).items():
            # one level of nesting is flattened: Werewolf's win_rate {team: 0/1} -> env_win_rate_<team>
            for key, item in value.items() if isinstance(value, dict) else [(None, value)]:
                if isinstance(item, (bool, int, float)) and math.isfinite(float(item)):
                    env_metrics[name if key is None else f"{name}_{key}"].append(float(item))
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
    """metrics.jsonl: one JSON line per iteration, appended with one write + fsync; the same numbers go to the
    experiment trackers of `accelerator` (accelerate's `log_with`), if it has any."""

    def __init__(self, run_dir: Path, accelerator: Any = None) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.accelerator = accelerator

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
        if self.accelerator is not None and self.accelerator.trackers:
            numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "iteration"}
            self.accelerator.log(numbers, step=record["iteration"])


def experiment_trackers(names: list[str] | None) -> list[str]:
    """The trackers of `selfplay.log_with`: None -> tensorboard when installed, else none. A named tracker
    that accelerate does not know or that is not installed raises OmarError."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    available = {str(t) for t in get_available_trackers()}
    if names is None:
        return ["tensorboard"] if "tensorboard" in available else []
    for name in names:
        if name not in LOGGER_TYPE_TO_CLASS:
            raise OmarError(
                f"selfplay.log_with: unknown tracker {name!r}; one of {sorted(LOGGER_TYPE_TO_CLASS)}"
            )
        if name not in available:
            raise OmarError(f"selfplay.log_with: {name} is not installed (pip install {name})")
    return list(names)


def start_trackers(accelerator: Any, config: RunConfig, run_dir: Path, start: int) -> None:
    """Start the accelerator's trackers with the run config (flattened to `section.key` scalars, as
    TensorBoard's hparams need); a resumed TensorBoard run drops the events of iterations >= `start`."""
    flat = {
        f"{section}.{key}": value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
        for section, values in config.to_dict().items()
        for key, value in values.items()
    }
    accelerator.init_trackers(
        TRACKER_PROJECT,
        config=flat,
        init_kwargs={
            "tensorboard": {"purge_step": start} if start else {},
            "wandb": {"name": run_dir.name},
            "mlflow": {"run_name": run_dir.name},
        },
    )


def summary_line(record: dict[str, Any], iterations: int) -> str:
    """One console line per iteration: the policy's reward per role, agreement/win rates the environment
    reports, the degenerate share, the KL (to the base with kl_coef, else PPO's old-to-new) and the time."""
    parts = [f"iteration {record['iteration'] + 1}/{iterations}"]
    rewards = sorted(
        (k[len("reward_") :], v) for k, v in record.items() if k.startswith("reward_") and k != "reward_mean"
    )
    parts.append("reward " + " ".join(f"{role} {value:+.3f}" for role, value in rewards))
    rates = sorted(
        (k[len("env_") :], v)
        for k, v in record.items()
        if k.startswith("env_") and ("agreement" in k or "win" in k)
    )
    parts.extend(f"{name} {value:.2f}" for name, value in rates)
    parts.append(f"degenerate {record.get('degenerate_fraction', 0.0):.2f}")
    kl = record.get("kl", record.get("approx_kl"))
    if kl is not None:
        parts.append(f"kl {kl:.4f}")
    parts.append(
        f"rollout {record['rollout_seconds']:.0f} s, update {record.get('update_seconds', 0.0):.0f} s "
        f"({record['num_processes']} process(es))"
    )
    return " | ".join(parts)


def _check_resumable(checkpoint: Path, config: RunConfig) -> None:
    saved = saved_config(checkpoint)
    current = config.to_dict()
    for key in ("iterations", "log_with"):  # extending a run, or watching it elsewhere, is allowed
        saved.get("selfplay", {}).pop(key, None)
        current["selfplay"].pop(key)
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
    """Which turns iteration `iteration` clones: during the warm start, or always with `algo: sft`, every
    well-formed one (of a role's episodes with reward >= `filter.min_reward`, when set), with
    `algo: filtered-bc` the `filter` section's; None: a PPO update."""
    if (
        iteration < config.update.warm_start_iterations or config.update.algo == "sft"
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


def _gathered(
    episodes: list[Episode], seconds: float, plan: list[dict[str, Any]], process: PartialState
) -> tuple[list[Episode], float]:
    """Every process's episodes, in plan order, on every process (a collective), and the rollout's wall time
    (the slowest process's)."""
    if process.num_processes == 1:
        return episodes, seconds
    parts = gather_object([(episodes, seconds)])
    position = {m["episode_id"]: i for i, m in enumerate(plan)}
    everyone = sorted((e for part, _ in parts for e in part), key=lambda e: position[e.episode_id])
    return everyone, max(part_seconds for _, part_seconds in parts)


def _rollout(
    graph: Any,
    inputs: list[dict[str, Any]],
    metadata: list[dict[str, Any]],
    max_concurrency: int,
    recursion_limit: int,
    progress: bool,
) -> tuple[list[Episode], float]:
    """Run the episodes. Every call samples from its episode's `sampling_seed`, whatever the batch; with
    max_concurrency 1 the batches themselves are fixed too (bit-exact logits, hence an exact resume)."""
    if not inputs:  # a process with no group of its own (fewer groups than processes)
        return [], 0.0
    if max_concurrency > 1:
        episodes, summary = run_episodes(
            graph,
            inputs,
            metadata,
            max_concurrency=max_concurrency,
            recursion_limit=recursion_limit,
            progress=progress,
        )
        return episodes, summary.seconds
    episodes, seconds = [], 0.0
    for one_input, meta in tqdm(
        list(zip(inputs, metadata, strict=True)), desc="episodes", disable=not progress, leave=False
    ):
        ran, summary = run_episodes(
            graph, [one_input], [meta], max_concurrency=1, recursion_limit=recursion_limit, progress=False
        )
        episodes.extend(ran)
        seconds += summary.seconds
    return episodes, seconds


def check_rollout(
    environment: SelfPlayEnvironment, iteration: int, episodes: Sequence[Episode], first: bool
) -> None:
    """Fail loud: every episode failed (raise, naming the first error); on the first iteration, a graph whose
    final state has no `rewards` (raise) or roles that act but are never rewarded (warn once)."""
    ok = [e for e in episodes if e.status == "ok"]
    if episodes and not ok:
        raise OmarError(
            f"iteration {iteration}: all {len(episodes)} episodes of {environment.name} failed; "
            f"the first: {episodes[0].error}"
        )
    if not first or not ok:
        return
    if not any(e.rewards for e in ok):
        raise OmarError(
            f"{environment.name}: no episode's final state has `rewards` ({{role: float}}): nothing to train on"
        )
    acted = {t.role for e in ok for t in e.turns if t.adapter == ADAPTER}
    unrewarded = sorted(acted - {role for e in ok for role in e.rewards})
    if unrewarded:
        warnings.warn(
            f"{environment.name}: role(s) {unrewarded} acted but never got a reward in the final state's "
            "`rewards`; their turns do not train",
            TrainingWarning,
            stacklevel=2,
        )


def untrained_reason(batch: TrainingBatch | None, record: dict[str, Any]) -> str | None:
    """Why an iteration's update trains no turn (None when some turn carries a signal)."""
    if batch is None:
        if record.get("bc_kept_turns") == 0 or record.get("warm_start"):
            return "behaviour cloning kept no turn (all degenerate, or below filter.min_reward)"
        return "no turn of the policy had a reward (the final state's `rewards` names no role it played)"
    if batch.behaviour_cloning:
        return None
    if all(s.degenerate for s in batch.samples):
        return "every turn was degenerate (empty, off-format, repeated or cut off): no signal"
    if not bool(batch.advantages.abs().sum() > 0):
        return "every advantage is zero (equal rewards within each group and role)"
    return None


def run_selfplay(
    config: RunConfig,
    run_dir: str | Path,
    environment: SelfPlayEnvironment,
    *,
    policy: SharedPolicy | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train `config.selfplay.iterations` iterations of `environment` (resuming from RUN's newest
    checkpoint); returns the metrics of the iterations run now. Every role plays on the trained adapter; a
    judge, if the environment has one, on the base model (adapter disabled), never on the policy it scores.
    Raises OmarError when every episode of an iteration failed; warns (`TrainingWarning`) with the reason when
    an iteration trained no turn."""
    from langgraph_omar.chat_model import ChatPolicy

    s = config.selfplay
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # one process, or one of several under torchrun / `accelerate launch`; accelerate only sees the
    # processes of a CPU run when told it is one
    on_cpu = policy.device.type == "cpu" if policy is not None else not torch.cuda.is_available()
    process = PartialState(cpu=on_cpu)
    main = process.is_main_process
    progress = progress and main
    # accelerate names a CPU process's device cpu:0, the engine registry (and ChatPolicy) plain cpu
    device = "cpu" if process.device.type == "cpu" else process.device
    policy = policy or SharedPolicy.get(s.model, device=device, dtype=s.decode_dtype)
    policy.prefill_dtype = resolve_dtype(s.prefill_dtype, "prefill", policy.device)
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None:
        _check_resumable(checkpoint, config)
    else:
        seed_everything(config.update.seed)
    trackers = experiment_trackers(s.log_with)
    trainer = PPOTrainer(
        policy, config, ADAPTER, log_with=trackers, logging_dir=str(run_dir / "logs"), progress=progress
    )
    ema = EmaBaseline(decay=config.advantage.ema_decay)
    start = resume_or_start(checkpoint, trainer, ema)
    log = MetricsLog(run_dir, trainer.accelerator) if main else None
    if log is not None:
        write_atomic(run_dir / "config.yaml", config.to_yaml())
        log.keep_before(start)
        if trackers:
            start_trackers(trainer.accelerator, config, run_dir, start)
    chat = ChatPolicy(
        model=policy.model_name,
        device=str(policy.device),  # this process's engine, the one the trainer updates
        adapter=ADAPTER,
        temperature=s.temperature,
        top_p=s.top_p,
        max_tokens=s.max_tokens,
    )
    judge = ChatPolicy(
        model=policy.model_name, device=str(policy.device), temperature=0.0, max_tokens=s.max_tokens
    )
    graph = environment.build_graph(chat, judge=judge)
    history: list[dict[str, Any]] = []
    started, longest = time.monotonic(), 0.0
    for iteration in tqdm(
        range(start, s.iterations), desc="iterations", disable=not progress, initial=start, total=s.iterations
    ):
        iteration_started = time.monotonic()
        plan = episode_plan(config, iteration, environment.sample_input)
        inputs, metadata = _this_process(*plan, process)
        with trainer.serving():
            episodes, rollout_seconds = _rollout(
                graph, inputs, metadata, s.max_concurrency, environment.recursion_limit, progress
            )
        for episode, meta in zip(episodes, metadata, strict=True):
            episode.metadata.update(meta)
            episode.metadata["iteration"] = iteration
        episodes, rollout_seconds = _gathered(episodes, rollout_seconds, plan[1], process)
        check_rollout(environment, iteration, episodes, first=iteration == start)
        record: dict[str, Any] = {
            "iteration": iteration,
            "rollout_seconds": rollout_seconds,
            "num_processes": process.num_processes,
        }
        record.update(rollout_metrics(episodes))
        record.update(mark_degenerate(episodes, config.degenerate))
        if main:
            write_episodes(run_dir / "trajectories.jsonl", episodes)
        bc_filter = behaviour_cloning_filter(config, iteration)
        record["warm_start"] = float(iteration < config.update.warm_start_iterations)
        batch = build_batch(
            episodes, config.advantage, ema, policy.tokenizer.pad_token_id, bc_filter, trained_adapter=ADAPTER
        )
        reason = untrained_reason(batch, record | (batch.metrics if batch is not None else {}))
        if reason is not None:
            if main:
                warnings.warn(
                    f"iteration {iteration} trained no turn: {reason}", TrainingWarning, stacklevel=2
                )
            record["untrained"] = 1.0
        if batch is None:  # nothing to learn from this time; the adapter stays as it is
            record["skipped_update"] = 1.0
        else:
            record.update(trainer.update(batch, episodes))
        # reward-hacking alarms (rl/alarms.py): alarm_* metrics and warnings; early_stop may end the run
        stop_early = watch_reward_hacking(history, record, episodes, config.early_stop, ADAPTER, process)
        if log is not None:  # every process holds the same numbers: all processes' episodes
            log.append(record)
            tqdm.write(summary_line(record, s.iterations))
        history.append(record)
        done = iteration + 1
        now = time.monotonic()
        longest = max(longest, now - iteration_started)
        out_of_time = s.max_minutes is not None and now + longest - started > 60 * s.max_minutes
        if process.num_processes > 1:  # the main process's clock decides for all: none may stop alone
            out_of_time = broadcast_object_list([out_of_time])[0]
        out_of_time = out_of_time or stop_early
        if done % s.checkpoint_every == 0 or done == s.iterations or out_of_time:
            process.wait_for_everyone()
            if main:  # DDP keeps the adapters equal on every process
                save_checkpoint(run_dir, done, trainer, ema, keep=s.keep_checkpoints)
            process.wait_for_everyone()
        if out_of_time:
            break
    if main:
        export_adapter(trainer, run_dir)
        for tracker in trainer.accelerator.trackers:  # not end_training(): it ends the process group too
            tracker.finish()
    return history
