"""Training from recorded episodes: `omar train --from FILE [--from FILE ...] --out RUN --algo ALGO`.

No rollout: the episodes of the files (any graph's traces, an expert's episodes, a self-play run's
`trajectories.jsonl`), labelled by `reward` when one is given, train the adapter in one pass. `--roles`
chooses whose turns learn (default: the roles that have rewards, so a judge's calls are not cloned; every
role when the files hold no reward). Algorithms (`update.algo`):
- `sft`: behaviour cloning of every chosen turn of the ok episodes. A turn the policy itself sampled (source
  "policy", recorded by the same model) trains on its recorded ids; any other turn (another model's, a
  person's, or another local model's) is tokenized from its recorded `messages` and text with the policy's
  chat template (`render_text_turn`). Rewards are not used.
- `filtered-bc`: the same cloning, limited to SOTOPIA-pi's best trajectories: per (group, role) the top
  `filter.top_fraction` of the agents' turn chains by the agent's reward, at or above `filter.min_reward`; degenerate turns dropped
  (`rl.batch.filtered_bc_rows`). A group is the episodes of one `group_id`; episodes without one are grouped
  by a shared `scenario_id`, and the rest (a file from `omar rollout`: one scenario per episode) are ranked
  together over the iteration (`filter_groups`).
- `ppo`: the hierarchical-advantage PPO update on the turns the policy sampled (their recorded
  log-probabilities are the ratio's old ones; `logprob_mismatch` says how far the trained policy was from
  the one that sampled them). Text-only turns are never PPO data.
`filtered-bc` and `ppo` need rewards: a file with none is refused, naming it.

The episodes are split, in file order, into chunks of about `selfplay.episodes_per_iteration` episodes
(adjacent episodes of one `group_id` stay together); each iteration is one update on one chunk. `ppo` makes
one iteration per chunk, of `update.epochs` passes (unset: 1). `sft` and `filtered-bc` make `update.epochs`
epochs over the whole file (unset: 3, as TRL's SFTTrainer), each epoch one single-pass iteration per chunk,
at `optimizer.learning_rate` (unset: 5e-4, a LoRA rate; `RunConfig.resolved`). The loop is self-play's
(`rl/training_run.py`: experiment trackers, reward-hacking alarms over the chosen roles, the console line,
resume), and so is the run folder, plus RUN/sources.json (the files' sha256, the roles, the reward function):
running the same command again resumes from the newest checkpoint, and refuses if the files, roles or reward
changed. The training rows of the recorded turns are `rl/recorded_turns.py`'s.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from accelerate import PartialState

from langgraph_omar.errors import OmarError
from langgraph_omar.rl.advantages import EmaBaseline
from langgraph_omar.rl.batch import TrainingBatch, build_batch
from langgraph_omar.rl.checkpoint import CheckpointError
from langgraph_omar.rl.config import BEHAVIOUR_CLONING, RunConfig
from langgraph_omar.rl.recorded_turns import (
    bc_batch,
    bc_samples,
    filter_groups,
    ppo_episodes,
    render_text_turn,
    sampled_by,
)
from langgraph_omar.rl.trainer import PPOTrainer
from langgraph_omar.rl.training_run import Collected, TrainingRun
from langgraph_omar.run_folder import RunFolder
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.trajectory import SOURCES, Episode, read_episodes
from langgraph_omar.trajectory.labels import RewardFunction, apply_rewards, load_reward_function

__all__ = [
    "bc_samples",
    "filter_groups",
    "render_text_turn",
]  # the turn rows' names, imported from here before

NEEDS_REWARDS = ("filtered-bc", "ppo")


# ---- reading and checking the episodes --------------------------------------------------------------------


def load_labelled_episodes(paths: Sequence[Path], reward: RewardFunction | None, algo: str) -> list[Episode]:
    """The episodes of every file in order, labelled by `reward`. Refuses two episodes with one id and, for
    the algorithms that use rewards, a file in which no episode has any."""
    episodes: list[Episode] = []
    seen: dict[str, Path] = {}
    for path in paths:
        own = read_episodes(path)
        if reward is not None:
            apply_rewards(own, reward)
        if algo in NEEDS_REWARDS and not any(e.rewards for e in own):
            raise OmarError(
                f"{path}: no episode has rewards, which --algo {algo} needs; pass --reward module:function "
                "(a function of an Episode returning {role: float}) or label the file "
                "(langgraph_omar.trajectory.labels)"
            )
        for episode in own:
            if episode.episode_id in seen:
                raise OmarError(
                    f"episode id {episode.episode_id!r} is in both {seen[episode.episode_id]} and {path}"
                )
            seen[episode.episode_id] = path
        episodes.extend(own)
    if not episodes:
        raise OmarError(f"no episode in {', '.join(map(str, paths))}")
    return episodes


def check_roles(episodes: Sequence[Episode], roles: Sequence[str] | None, algo: str) -> list[str]:
    """The chosen roles. By default the roles some episode rewards (a judge's or a narrator's calls have no
    reward: they are not cloned), or every role that took a turn when no episode has rewards. Unknown roles,
    or chosen roles that never have a reward under an algorithm that needs one, are refused."""
    present = list(dict.fromkeys(role for e in episodes for role in e.roles))
    rewarded = [role for role in present if any(role in e.rewards for e in episodes)]
    chosen = list(roles) if roles else (rewarded or present)
    unknown = [role for role in chosen if role not in present]
    if unknown:
        raise OmarError(
            f"--roles {' '.join(unknown)}: no turn of that role (the files have {', '.join(present)})"
        )
    if algo in NEEDS_REWARDS and not set(rewarded) & set(chosen):
        raise OmarError(
            f"--algo {algo}: no episode rewards roles {', '.join(chosen)} (rewards are for "
            f"{', '.join(rewarded)}); pass --reward module:function or --roles"
        )
    return chosen


# ---- iterations, sources, the loop -------------------------------------------------------------------------


def iteration_chunks(episodes: Sequence[Episode], size: int) -> list[list[Episode]]:
    """Consecutive runs of about `size` episodes; adjacent episodes of one group_id are never split."""
    chunks: list[list[Episode]] = []
    for episode in episodes:
        group = episode.metadata.get("group_id", episode.episode_id)
        last = chunks[-1] if chunks else None
        same_group = last is not None and last[-1].metadata.get("group_id", last[-1].episode_id) == group
        if last is not None and (len(last) < size or same_group):
            last.append(episode)
        else:
            chunks.append([episode])
    return chunks


def sources_record(paths: Sequence[Path], roles: Sequence[str], reward: str | None) -> dict[str, Any]:
    """What a run trains on, to refuse a resume from other files: each file's sha256, the roles, the reward."""
    files = []
    for path in paths:
        with open(path, "rb") as f:
            files.append({"path": str(path), "sha256": hashlib.file_digest(f, "sha256").hexdigest()})
    return {"files": files, "roles": list(roles), "reward": reward}


def _reward_name(reward: str | RewardFunction | None) -> str | None:
    if reward is None or isinstance(reward, str):
        return reward
    return f"{getattr(reward, '__module__', '?')}:{getattr(reward, '__qualname__', repr(reward))}"


class FilesSource:
    """Recorded episodes for `TrainingRun`: the schedule of (epoch, chunk) iterations, the chosen roles
    trained (cloned, or PPO on the policy's own turns)."""

    def __init__(
        self,
        config: RunConfig,
        episodes: Sequence[Episode],
        roles: Sequence[str],
        sources: dict[str, Any],
        policy: SharedPolicy,
    ) -> None:
        self.config, self.roles, self.sources, self.policy = config, list(roles), sources, policy
        self.rates: Collection[str] = ()  # no environment declares any
        chunks = iteration_chunks(episodes, config.selfplay.episodes_per_iteration)
        # cloning: `update.epochs` passes over the file, one pass an iteration (more epochs extend the run)
        epochs = config.update.resolved_epochs if config.update.algo in BEHAVIOUR_CLONING else 1
        self.schedule = [(epoch, chunk) for epoch in range(epochs) for chunk in chunks]
        self.iterations = len(self.schedule)
        self.max_tokens: int | None = None  # the recording's cap: raising --max-tokens is no remedy

    def trained_roles(self, episode: Episode) -> set[str]:
        return set(self.roles)

    def check_resume(self, folder: RunFolder) -> None:
        if folder.read_sources() != self.sources:
            raise CheckpointError(
                f"{folder.path} was trained from other files, roles or reward; use a new --out"
            )

    def save(self, folder: RunFolder) -> None:
        folder.write_sources(self.sources)

    def start(self, trainer: PPOTrainer, process: PartialState, progress: bool) -> None:
        """Nothing to build: the episodes are read."""

    def collect(self, iteration: int, trainer: PPOTrainer, first: bool) -> Collected:
        epoch, chunk = self.schedule[iteration]
        metrics: dict[str, Any] = {"epoch": epoch, "episodes": float(len(chunk))}
        metrics.update({f"turns_{k}": float(v) for k, v in _source_counts(chunk, self.roles).items()})
        return Collected(list(chunk), metrics, record=epoch == 0)

    def batch(
        self, iteration: int, episodes: list[Episode], ema: EmaBaseline, record: dict[str, Any]
    ) -> tuple[TrainingBatch | None, Sequence[Episode]]:
        config, policy = self.config, self.policy
        if config.update.algo == "ppo":
            trained = ppo_episodes(episodes, self.roles, policy.model_name)
            return build_batch(trained, config.advantage, ema, policy.tokenizer.pad_token_id), trained
        batch, counts = bc_batch(episodes, self.roles, policy, config)
        record.update(counts)
        return batch, episodes

    def value_fit_batch(
        self, iteration: int, episodes: list[Episode], ema: EmaBaseline
    ) -> TrainingBatch | None:
        """No fit: a run from files trains its head, if it has one, only in its PPO updates."""
        return None


def train_from_files(
    config: RunConfig,
    run_dir: str | Path,
    paths: Sequence[str | Path],
    *,
    roles: Sequence[str] | None = None,
    reward: str | RewardFunction | None = None,
    policy: SharedPolicy | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train `config.update.algo` on the episodes of `paths` (see the module docstring), resuming from RUN's
    newest checkpoint; returns the metrics of the iterations run now. `reward`: a function of an Episode
    returning {role: float}, or its `module:function` name. Raises OmarError for files without rewards
    (filtered-bc, ppo), unknown roles, or nothing to train."""
    algo = config.update.algo
    cloning = algo in BEHAVIOUR_CLONING
    config = config.resolved(files_bc=cloning)
    files = [Path(p) for p in paths]
    if not files:
        raise OmarError("train from files: no file given")
    reward_fn: Callable[[Episode], Mapping[str, float]] | None = (
        load_reward_function(reward) if isinstance(reward, str) else reward
    )
    episodes = load_labelled_episodes(files, reward_fn, algo)
    chosen = check_roles(episodes, roles, algo)
    # cloning: one pass over a chunk an iteration; the epochs are the schedule's
    trainer_config = replace(config, update=replace(config.update, epochs=1)) if cloning else config
    run = TrainingRun(config, run_dir, policy, trainer_config=trainer_config, progress=progress)
    model = run.policy.model_name
    if algo == "ppo" and not any(sampled_by(t, model) for e in episodes for t in e.turns if t.role in chosen):
        raise OmarError(
            f"--algo ppo trains only turns {model!r} sampled itself (recorded log-probabilities); "
            f"{', '.join(map(str, files))} hold none of roles {', '.join(chosen)}: use --algo sft or filtered-bc"
        )
    sources = sources_record(files, chosen, _reward_name(reward))
    return run.train(FilesSource(config, episodes, chosen, sources, run.policy))


def run_summary(history: Sequence[Mapping[str, Any]], config: RunConfig) -> str:
    """The console line of a run's `history`: iterations, epochs, optimizer steps (in all, resumed ones
    included) and the turns of one epoch (the last one run) by source."""
    algo = config.update.algo
    cloning = algo in BEHAVIOUR_CLONING
    epochs = sorted({int(r.get("epoch", 0)) for r in history})
    last = [r for r in history if int(r.get("epoch", 0)) == epochs[-1]]
    turns = sum(r.get("trained_turns", 0.0) for r in last)
    kinds = ", ".join(f"{k} {sum(r.get(f'turns_{k}', 0.0) for r in last):.0f}" for k in SOURCES)
    steps = max(r.get("optimizer_steps", 0.0) for r in history)
    passes = (
        f"{len(epochs)} epoch(s) over the file"
        if cloning
        else f"{config.resolved().update.resolved_epochs} epoch(s) an iteration"
    )
    return (
        f"trained {len(history)} iteration(s), {passes}, {steps:.0f} optimizer steps, {turns:.0f} turns "
        f"{'an epoch ' if cloning else ''}({algo}; recorded: {kinds})"
    )


def _source_counts(episodes: Sequence[Episode], roles: Sequence[str]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for episode in episodes:
        counts.update(t.source for t in episode.turns if t.role in roles)
    return dict(counts)
