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

The loop itself (run folder, update, alarms, checkpoints) is `rl/training_run.py`'s, shared with training from
files; this module is its source of episodes: `SelfPlaySource`.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any, Protocol

from accelerate import PartialState
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from langgraph_omar.errors import OmarError
from langgraph_omar.rl.advantages import EmaBaseline
from langgraph_omar.rl.batch import TrainingBatch, build_batch
from langgraph_omar.rl.config import FilterSettings, RunConfig
from langgraph_omar.rl.signal_reasons import untrained_reason
from langgraph_omar.rl.tracking import TRACKER_PROJECT, experiment_trackers, summary_line
from langgraph_omar.rl.trainer import PPOTrainer
from langgraph_omar.rl.training_run import ADAPTER, Collected, TrainingRun, TrainingWarning
from langgraph_omar.rollout import run_episodes, tool_counts, tool_note
from langgraph_omar.run_folder import RunFolder
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.serving.sampling import derive_seed
from langgraph_omar.trajectory import Episode
from langgraph_omar.trajectory.metadata import episode_metadata

__all__ = [  # the loop's names tests and callers have imported from here
    "ADAPTER",
    "TRACKER_PROJECT",
    "TrainingWarning",
    "experiment_trackers",
    "summary_line",
    "untrained_reason",
]


class SelfPlayEnvironment(Protocol):
    """What the loop needs of an environment (`langgraph_omar.envs.Environment` has it; `rl` imports none)."""

    name: str

    @property
    def recursion_limit(self) -> int: ...

    def build_graph(self, model: Any, *, judge: Any = None) -> Any: ...

    def sample_input(self, seed: int) -> dict[str, Any]: ...

    def sample_config(self, seed: int) -> dict[str, Any]: ...


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
        seats: dict[str, str | None] | None = None
        if g < base_groups:  # the base role rotates over the groups and the iterations
            roles = s.base_opponent_roles
            seats = {roles[(iteration * base_groups + g) % len(roles)]: None}
        for j in range(s.group_size):
            inputs.append(scenario_input)
            metadata.append(
                dict(  # a plain dict, as the loop passes metadata on
                    episode_metadata(
                        seed,
                        episode_id=f"it{iteration:05d}-g{g:04d}-e{j:03d}",
                        group_id=f"it{iteration:05d}-g{g:04d}",
                        scenario_id=scenario_id,
                        sampling_seed=derive_seed(s.seed, iteration, g, j),
                        baseline_key=config.env.name,  # SPIRAL's EMA baseline: per game and role
                        iteration=iteration,
                        adapter_by_role=seats,
                    )
                )
            )
    return inputs, metadata


def rollout_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    """Episode and token counts, and the env's numeric metrics (the reward means are the loop's:
    `rl.training_run.reward_means`)."""
    ok = [e for e in episodes if e.status == "ok"]
    env_metrics: dict[str, list[float]] = defaultdict(list)
    for episode in ok:
        for name, value in (episode.metadata.get("metrics") or {}).items():
            # one level of nesting is flattened: Werewolf's win_rate {team: 0/1} -> env_win_rate_<team>
            for key, item in value.items() if isinstance(value, dict) else [(None, value)]:
                if isinstance(item, (bool, int, float)) and math.isfinite(float(item)):
                    env_metrics[name if key is None else f"{name}_{key}"].append(float(item))
    metrics = {
        "episodes": float(len(episodes)),
        "failed_episodes_rollout": float(len(episodes) - len(ok)),
        "turns": float(sum(len(e.turns) for e in episodes)),
        "generated_tokens": float(sum(len(t.completion_ids) for e in episodes for t in e.turns)),
    }
    metrics.update({f"env_{name}": sum(v) / len(v) for name, v in env_metrics.items()})
    return metrics


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
    configurable: list[dict[str, Any]],
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
            configurable=configurable,
        )
        return episodes, summary.seconds
    episodes, seconds = [], 0.0
    for one_input, meta, values in tqdm(
        list(zip(inputs, metadata, configurable, strict=True)),
        desc="episodes",
        disable=not progress,
        leave=False,
    ):
        ran, summary = run_episodes(
            graph,
            [one_input],
            [meta],
            max_concurrency=1,
            recursion_limit=recursion_limit,
            progress=False,
            configurable=[values],
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


class SelfPlaySource:
    """Self-play's episodes for `TrainingRun`: each iteration's groups played on the trained adapter (this
    process's share, gathered from all), every role the policy played trained."""

    def __init__(self, config: RunConfig, environment: SelfPlayEnvironment, policy: SharedPolicy) -> None:
        self.config, self.environment, self.policy = config, environment, policy
        self.iterations = config.selfplay.iterations
        self.max_tokens: int | None = config.selfplay.max_tokens
        declared = getattr(
            environment, "rate_metrics", None
        )  # Environment declares them; a bare protocol may not
        self.rates: Collection[str] = declared() if callable(declared) else ()
        self.graph: Any = None
        self.process: PartialState | None = None
        self.progress = False

    def trained_roles(self, episode: Episode) -> set[str]:
        return episode.roles_played_by(ADAPTER)

    def check_resume(self, folder: RunFolder) -> None:
        """Nothing beyond the config: the environment is part of it."""

    def save(self, folder: RunFolder) -> None:
        """Nothing beyond config.yaml."""

    def start(self, trainer: PPOTrainer, process: PartialState, progress: bool) -> None:
        """Build the graph: every role on the trained adapter, a judge on the base model (adapter disabled)
        unless the environment names a judge model of its own, never on the policy it scores."""
        from langgraph_omar.chat_model import ChatPolicy, served_judge

        s, policy = self.config.selfplay, self.policy
        chat = ChatPolicy(
            model=policy.model_name,
            device=str(policy.device),  # this process's engine, the one the trainer updates
            adapter=ADAPTER,
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_tokens,
        )
        # a judge's budget, as in `omar rollout` and `omar eval`: a verdict or a JSON object needs more room than
        # the players' turn cap
        judge = served_judge(policy.model_name, str(policy.device))
        self.graph = self.environment.build_graph(chat, judge=judge)
        self.process, self.progress = process, progress

    def collect(self, iteration: int, trainer: PPOTrainer, first: bool) -> Collected:
        environment, process = self.environment, self.process
        assert process is not None, "start() first"
        plan = episode_plan(self.config, iteration, environment.sample_input)
        inputs, metadata = _this_process(*plan, process)
        with trainer.serving():
            configurable = [environment.sample_config(meta["seed"]) for meta in metadata]
            episodes, rollout_seconds = _rollout(
                self.graph,
                inputs,
                metadata,
                self.config.selfplay.max_concurrency,
                environment.recursion_limit,
                self.progress,
                configurable,
            )
        episodes, rollout_seconds = _gathered(episodes, rollout_seconds, plan[1], process)
        check_rollout(environment, iteration, episodes, first=first)
        note = tool_note(len(episodes), *tool_counts(episodes))
        metrics = {"rollout_seconds": rollout_seconds} | rollout_metrics(episodes)
        return Collected(episodes, metrics, notes=[note] if note else [])

    def batch(
        self, iteration: int, episodes: list[Episode], ema: EmaBaseline, record: dict[str, Any]
    ) -> tuple[TrainingBatch | None, Sequence[Episode]]:
        config = self.config
        record["warm_start"] = float(iteration < config.update.warm_start_iterations)
        bc_filter = behaviour_cloning_filter(config, iteration)
        pad = self.policy.tokenizer.pad_token_id
        return build_batch(episodes, config.advantage, ema, pad, bc_filter, trained_adapter=ADAPTER), episodes

    def value_fit_batch(
        self, iteration: int, episodes: list[Episode], ema: EmaBaseline
    ) -> TrainingBatch | None:
        """A critic's warm start (behaviour cloning does not train the head): every turn."""
        if behaviour_cloning_filter(self.config, iteration) is None:
            return None
        pad = self.policy.tokenizer.pad_token_id
        return build_batch(episodes, self.config.advantage, ema, pad, trained_adapter=ADAPTER)


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
    judge, if the environment has one, on the base model (adapter disabled) unless the environment names a
    judge model of its own, never on the policy it scores.
    Raises OmarError when every episode of an iteration failed; warns (`TrainingWarning`) with the reason when
    an iteration trained no turn."""
    config = config.resolved()  # unset keys get their defaults, so config.yaml and checkpoints say what ran
    run = TrainingRun(config, run_dir, policy, progress=progress)
    return run.train(SelfPlaySource(config, environment, run.policy))
