"""One training run: the run folder and the update loop, fed by a source of episodes.

`omar train ENV` (self-play rollouts, `rl/selfplay.py`) and `omar train --from FILE` (recorded episodes,
`rl/from_files.py`) are two `EpisodeSource`s of one loop. Each iteration: the source's episodes, their
reward means (one way: over the ok episodes' rewards of the roles the policy played), degenerate marking,
RUN/trajectories.jsonl, the source's batch, the update (and a critic's value fit), the reason when nothing
trained, the reward-hacking alarms (`rl/alarms.py`), one metrics.jsonl line (also to the experiment trackers)
and one console line, the checkpoint cadence and the wall-clock budget; at the end, RUN/adapter.

Running the same command again resumes from the newest checkpoint, refused when the config changed. Under
several processes only the main one writes the run folder and warns; the main process decides for all when to
stop (time budget, early stop), so that all stop together.
"""

from __future__ import annotations

import time
import warnings
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from tqdm.auto import tqdm

from langgraph_omar.rl.advantages import EmaBaseline
from langgraph_omar.rl.alarms import TrainedRoles, watch_reward_hacking
from langgraph_omar.rl.batch import TrainingBatch
from langgraph_omar.rl.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    resume_or_start,
    save_checkpoint,
    saved_config,
    seed_everything,
)
from langgraph_omar.rl.config import RunConfig
from langgraph_omar.rl.degenerate import mark_degenerate
from langgraph_omar.rl.signal_reasons import degenerate_note, untrained_reason
from langgraph_omar.rl.tracking import experiment_trackers, log_to_trackers, start_trackers, summary_line
from langgraph_omar.rl.trainer import PPOTrainer
from langgraph_omar.run_folder import RunFolder
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.serving.precision import resolve_dtype
from langgraph_omar.trajectory import Episode

ADAPTER = "policy"


class TrainingWarning(UserWarning):
    """An iteration that trained nothing, or a graph that leaves roles unrewarded: said once, with the reason."""


@dataclass
class Collected:
    """One iteration's episodes from a source, the source's own metrics of them, whether they go to
    RUN/trajectories.jsonl (a file's episodes are written once, in the first epoch), and what to tell the user
    about them."""

    episodes: list[Episode]
    metrics: dict[str, Any] = field(default_factory=dict)
    record: bool = True
    notes: list[str] = field(default_factory=list)  # said once, as this iteration's warnings


class EpisodeSource(Protocol):
    """Where a run's episodes come from (self-play rollouts, recorded files) and how they become a batch."""

    iterations: int  # the run's last iteration + 1
    max_tokens: int | None  # the replies' token cap when this run sets it (None: the recording's)
    rates: Collection[str]  # the environment's declared rate metrics, shown on the console line

    def trained_roles(self, episode: Episode) -> set[str]:
        """The roles of `episode` the policy played (their rewards are the run's reward means)."""
        ...

    def check_resume(self, folder: RunFolder) -> None:
        """Refuse to resume `folder` when it trained on something else (CheckpointError)."""
        ...

    def save(self, folder: RunFolder) -> None:
        """Write what the source adds to the run folder (main process)."""
        ...

    def start(self, trainer: PPOTrainer, process: PartialState, progress: bool) -> None:
        """Called once the trainer holds the adapter, before the first iteration."""
        ...

    def collect(self, iteration: int, trainer: PPOTrainer, first: bool) -> Collected: ...

    def batch(
        self, iteration: int, episodes: list[Episode], ema: EmaBaseline, record: dict[str, Any]
    ) -> tuple[TrainingBatch | None, Sequence[Episode]]:
        """The update's batch (None: nothing to learn) and the episodes it was built from; counts go to
        `record`."""
        ...

    def value_fit_batch(
        self, iteration: int, episodes: list[Episode], ema: EmaBaseline
    ) -> TrainingBatch | None:
        """Every turn, to fit a critic's value head on an iteration that did not train it (None: no fit)."""
        ...


def reward_means(episodes: Sequence[Episode], roles_of: TrainedRoles) -> dict[str, float]:
    """reward_mean over the ok episodes' rewards of the roles the policy played (`roles_of`), and reward_ROLE
    per role; nothing when there is no such reward."""
    rewards: dict[str, list[float]] = defaultdict(list)
    for episode in episodes:
        if episode.status != "ok":
            continue
        played = roles_of(episode)
        for role, reward in episode.rewards.items():
            if role in played:
                rewards[role].append(reward)
    every = [r for values in rewards.values() for r in values]
    if not every:
        return {}
    means = {"reward_mean": sum(every) / len(every)}
    means.update({f"reward_{role}": sum(v) / len(v) for role, v in rewards.items()})
    return means


def check_resumable(checkpoint: Path, config: RunConfig) -> None:
    """Refuse a checkpoint trained with another config; extending a run (`selfplay.iterations`) or watching
    it elsewhere (`selfplay.log_with`) is allowed."""
    saved = saved_config(checkpoint)
    current = config.to_dict()
    for key in ("iterations", "log_with"):
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


def export_adapter(trainer: PPOTrainer, folder: RunFolder) -> Path:
    """Save the current adapter to RUN/adapter (atomically), loadable with ChatPolicy(adapter=...)."""

    def save(tmp: Path) -> Path:
        trainer.module.peft_model.save_pretrained(str(tmp), selected_adapters=[trainer.adapter_name])
        nested = tmp / trainer.adapter_name  # peft nests adapters not named "default"
        return nested if nested.is_dir() else tmp

    return folder.publish_adapter(save)


class TrainingRun:
    """A run folder and its update loop. `config` is what RUN/config.yaml records; `trainer_config`, if other,
    what the trainer runs with (and checkpoints store)."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: str | Path,
        policy: SharedPolicy | None = None,
        *,
        trainer_config: RunConfig | None = None,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.trainer_config = trainer_config or config
        self.folder = RunFolder(run_dir).create()
        # one process, or one of several under torchrun / `accelerate launch`; accelerate only sees the
        # processes of a CPU run when told it is one
        on_cpu = policy.device.type == "cpu" if policy is not None else not torch.cuda.is_available()
        self.process = PartialState(cpu=on_cpu)
        self.main = self.process.is_main_process
        self.progress = progress and self.main
        # accelerate names a CPU process's device cpu:0, the engine registry (and ChatPolicy) plain cpu
        device = "cpu" if self.process.device.type == "cpu" else self.process.device
        s = config.selfplay
        self.policy = policy or SharedPolicy.get(s.model, device=device, dtype=s.decode_dtype)
        self.policy.prefill_dtype = resolve_dtype(s.prefill_dtype, "prefill", self.policy.device)

    def warn(self, message: str) -> None:
        if self.main:
            warnings.warn(message, TrainingWarning, stacklevel=3)

    def train(self, source: EpisodeSource) -> list[dict[str, Any]]:
        """Run the source's iterations from the newest checkpoint on; returns the metrics of those run now."""
        config, folder, process = self.config, self.folder, self.process
        s = config.selfplay
        checkpoint = latest_checkpoint(folder.path)
        if checkpoint is not None:
            check_resumable(checkpoint, self.trainer_config)
            source.check_resume(folder)
        else:
            seed_everything(config.update.seed)
        trackers = experiment_trackers(s.log_with)
        trainer = PPOTrainer(
            self.policy,
            self.trainer_config,
            ADAPTER,
            log_with=trackers,
            logging_dir=str(folder.logs),
            progress=self.progress,
        )
        ema = EmaBaseline(decay=config.advantage.ema_decay)
        start = resume_or_start(checkpoint, trainer, ema)
        if self.main:
            folder.write_config(config.to_yaml())
            source.save(folder)
            folder.keep_metrics_before(start)
            if trackers:
                start_trackers(trainer.accelerator, config, folder.path.name, start)
        source.start(trainer, process, self.progress)
        history: list[dict[str, Any]] = []
        started, longest = time.monotonic(), 0.0
        total = source.iterations
        for iteration in tqdm(
            range(start, total), desc="iterations", disable=not self.progress, initial=start, total=total
        ):
            iteration_started = time.monotonic()
            record, stop_early = self._iteration(
                source, trainer, ema, iteration, history, first=iteration == start
            )
            if self.main:  # every process holds the same numbers: all processes' episodes
                folder.append_metrics(record)
                log_to_trackers(trainer.accelerator, record)
                tqdm.write(summary_line(record, total, source.rates))
            history.append(record)
            done = iteration + 1
            now = time.monotonic()
            longest = max(longest, now - iteration_started)
            out_of_time = s.max_minutes is not None and now + longest - started > 60 * s.max_minutes
            if process.num_processes > 1:  # the main process's clock decides for all: none may stop alone
                out_of_time = broadcast_object_list([out_of_time])[0]
            out_of_time = out_of_time or stop_early
            if done % s.checkpoint_every == 0 or done == total or out_of_time:
                process.wait_for_everyone()
                if self.main:  # DDP keeps the adapters equal on every process
                    save_checkpoint(folder.path, done, trainer, ema, keep=s.keep_checkpoints)
                process.wait_for_everyone()
            if out_of_time:
                break
        if self.main:
            export_adapter(trainer, folder)
            for tracker in trainer.accelerator.trackers:  # not end_training(): it ends the process group too
                tracker.finish()
        return history

    def _iteration(
        self,
        source: EpisodeSource,
        trainer: PPOTrainer,
        ema: EmaBaseline,
        iteration: int,
        history: list[dict[str, Any]],
        first: bool,
    ) -> tuple[dict[str, Any], bool]:
        """One iteration's metrics record, and whether the alarms end the run here."""
        config = self.config
        collected = source.collect(iteration, trainer, first)
        episodes = collected.episodes
        for said in collected.notes:
            self.warn(f"iteration {iteration}: {said}")
        record: dict[str, Any] = {"iteration": iteration, "num_processes": self.process.num_processes}
        record.update(collected.metrics)
        record.update(reward_means(episodes, source.trained_roles))
        record.update(mark_degenerate(episodes, config.degenerate))
        if self.main and collected.record:
            self.folder.append_episodes(episodes)
        batch, trained = source.batch(iteration, episodes, ema, record)
        if batch is None:  # nothing to learn from this time; the adapter stays as it is
            record["skipped_update"] = 1.0
        else:
            record.update(trainer.update(batch, trained))
            if record.get("bc_tokenized_turns"):  # their "old" log-probabilities are placeholders
                for key in ("logprob_mismatch", "logprob_mismatch_tokens"):
                    record.pop(key, None)
        if trainer.value_head is not None and (
            every_turn := source.value_fit_batch(iteration, episodes, ema)
        ):
            record.update(trainer.fit_value_head(every_turn, episodes))
        # after the update: critic mode's advantages are computed inside it
        metrics = record | (batch.metrics if batch is not None else {})
        reason = untrained_reason(batch, metrics, trained, config.advantage, source.max_tokens)
        if reason is not None:
            self.warn(f"iteration {iteration} trained no turn: {reason}")
            record["untrained"] = 1.0
        elif batch is not None and (note := degenerate_note(batch, config.advantage, source.max_tokens)):
            self.warn(f"iteration {iteration}: {note}")
        # reward-hacking alarms (rl/alarms.py): alarm_* metrics and warnings; early_stop may end the run
        with warnings.catch_warnings():
            if not self.main:
                warnings.simplefilter("ignore")
            stop = watch_reward_hacking(
                history, record, episodes, config.early_stop, source.trained_roles, self.process
            )
        return record, stop
