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
at `optimizer.learning_rate` (unset: 5e-4, a LoRA rate; `RunConfig.resolved`). The run folder is a self-play run's: RUN/config.yaml, metrics.jsonl (one line per
iteration), trajectories.jsonl (the episodes trained on, with their labels), checkpoints/, adapter/, plus
RUN/sources.json (the files' sha256, the roles, the reward function): running the same command again resumes
from the newest checkpoint, and refuses if the files, roles or reward changed.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from accelerate import PartialState
from tqdm.auto import tqdm

from langgraph_omar.atomic import write_atomic
from langgraph_omar.errors import OmarError
from langgraph_omar.rl.advantages import EmaBaseline
from langgraph_omar.rl.batch import TrainingBatch, TurnSample, build_batch, filtered_bc_rows, pad_samples
from langgraph_omar.rl.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    resume_or_start,
    save_checkpoint,
    seed_everything,
)
from langgraph_omar.rl.config import BEHAVIOUR_CLONING, RunConfig
from langgraph_omar.rl.degenerate import mark_degenerate
from langgraph_omar.rl.selfplay import (
    ADAPTER,
    MetricsLog,
    TrainingWarning,
    _check_resumable,
    export_adapter,
    untrained_reason,
)
from langgraph_omar.rl.signal_reasons import degenerate_note
from langgraph_omar.rl.trainer import PPOTrainer
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.trajectory import SOURCES, Episode, Turn, read_episodes, write_episodes
from langgraph_omar.trajectory.labels import RewardFunction, apply_rewards, load_reward_function

NEEDS_REWARDS = ("filtered-bc", "ppo")
SOURCES_FILE = "sources.json"


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


def sampled_by(turn: Turn, model: str) -> bool:
    """Whether `turn`'s recorded ids are the trained model's own: the policy sampled it, on that model
    (version 1 files did not record the model: their turns are taken as the model's)."""
    return turn.source == "policy" and turn.model in (None, model)


# ---- behaviour-cloning rows ------------------------------------------------------------------------------


def _ids(encoded: Any) -> list[int]:
    """Token ids from `apply_chat_template` or a tokenizer call (transformers 5 returns a BatchEncoding)."""
    return list(encoded if isinstance(encoded, list) else encoded["input_ids"])


def render_text_turn(
    policy: SharedPolicy, messages: list[dict[str, str]], text: str
) -> tuple[list[int], list[int]]:
    """Prompt and completion ids of a text-only turn under the policy's chat template: the prompt as
    `ChatPolicy` would have rendered `messages` (the oldest dropped if it does not fit), the completion the
    template's assistant reply `text` up to its first end-of-turn id (what the policy would have to sample).
    A template that rewrites earlier turns when a reply follows (the prefix differs) gets `text`'s own ids
    and an end-of-sequence id."""
    tokenizer = policy.tokenizer
    reply = [*messages, {"role": "assistant", "content": text}]
    full = _ids(tokenizer.apply_chat_template(reply, tokenize=True))
    prompt = _ids(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True))
    if full[: len(prompt)] == prompt:
        completion = full[len(prompt) :]
        ends = [i for i, token in enumerate(completion) if token in policy.eos_ids]
        completion = completion[: ends[0] + 1] if ends else completion
    else:
        completion = _ids(tokenizer(text, add_special_tokens=False)) + [int(tokenizer.eos_token_id)]
    prompt, _ = policy.render(messages, len(completion))
    return prompt, completion


def filter_groups(episodes: Sequence[Episode]) -> list[str]:
    """The group filtered-bc ranks each episode in: its `group_id`; without one, its `scenario_id` when another
    such episode shares it; else one group of all the remaining episodes (the whole iteration, as for a file
    from `omar rollout`, where every episode has its own scenario and none a group)."""
    shared = Counter(
        str(e.metadata["scenario_id"])
        for e in episodes
        if "group_id" not in e.metadata and "scenario_id" in e.metadata
    )
    groups = []
    for episode in episodes:
        meta = episode.metadata
        if "group_id" in meta:
            groups.append(f"group:{meta['group_id']}")
        elif shared[str(meta.get("scenario_id"))] > 1:
            groups.append(f"scenario:{meta['scenario_id']}")
        else:
            groups.append("iteration")
    return groups


def bc_samples(
    episodes: Sequence[Episode], roles: Sequence[str], policy: SharedPolicy
) -> tuple[list[TurnSample], dict[str, float]]:
    """One behaviour-cloning row per chosen turn of the ok episodes: the recorded ids of the policy's own
    turns, the chat-template ids of the others (their log-probabilities are placeholders: the cloning loss
    does not read them). Each row's group is its episode's `filter_groups` among the ok episodes."""
    samples: list[TurnSample] = []
    counts: Counter[str] = Counter()
    ok = [e for e in episodes if e.status == "ok"]
    group_of = {id(e): group for e, group in zip(ok, filter_groups(ok), strict=True)}
    for e, episode in enumerate(episodes):
        if episode.status != "ok":
            counts["failed_episodes"] += 1
            continue
        group = group_of[id(episode)]
        for t, turn in enumerate(episode.turns):
            if turn.role not in roles:
                continue
            if sampled_by(turn, policy.model_name):
                prompt, completion, logprobs = turn.prompt_ids, turn.completion_ids, turn.logprobs
                temperature = turn.temperature if turn.temperature > 0 else 1.0
                counts["bc_recorded_turns"] += 1
            elif turn.messages:
                try:
                    prompt, completion = render_text_turn(policy, turn.messages, turn.text)
                except OmarError:
                    raise
                except Exception as exc:  # the tokenizer's template (jinja) refusing these messages
                    raise OmarError(
                        f"episode {episode.episode_id!r} turn {t}: {policy.model_name!r}'s chat template cannot "
                        f"render its messages: {type(exc).__name__}: {exc}"
                    ) from exc
                logprobs, temperature = [0.0] * len(completion), 1.0
                counts["bc_tokenized_turns"] += 1
            else:
                counts["bc_turns_without_messages"] += 1
                continue
            if completion:
                samples.append(
                    TurnSample(
                        e,
                        t,
                        turn.role,
                        group,
                        group,
                        list(prompt),
                        list(completion),
                        list(logprobs),
                        temperature,
                        turn.degenerate,
                        turn.agent,
                    )
                )
    return samples, {k: float(v) for k, v in counts.items()}


def bc_batch(
    episodes: Sequence[Episode], roles: Sequence[str], policy: SharedPolicy, config: RunConfig
) -> tuple[TrainingBatch | None, dict[str, float]]:
    """The cloning batch of one iteration (sft: every row; filtered-bc: the filter's rows; None if that
    leaves none) and counts of the rows."""
    samples, metrics = bc_samples(episodes, roles, policy)
    if config.update.algo == "filtered-bc":
        rows = filtered_bc_rows(episodes, samples, config.filter)
        metrics["bc_kept_turns"] = float(len(rows))
        samples = [samples[i] for i in rows]
    if not samples:
        return None, metrics
    batch = pad_samples(samples, policy.tokenizer.pad_token_id)
    batch.advantages = batch.completion_mask.float()
    batch.behaviour_cloning = True
    return batch, metrics


def ppo_episodes(episodes: Sequence[Episode], roles: Sequence[str], model: str) -> list[Episode]:
    """Copies holding only what PPO may train: the chosen roles' turns the policy sampled on `model`, and
    those roles' rewards (turn indices are the copies')."""
    return [
        replace(
            e,
            turns=[t for t in e.turns if t.role in roles and sampled_by(t, model)],
            rewards={r: v for r, v in e.rewards.items() if r in roles},
        )
        for e in episodes
    ]


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
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    process = PartialState(cpu=policy.device.type == "cpu") if policy is not None else PartialState()
    policy = policy or SharedPolicy.get(config.selfplay.model, device=process.device)
    if algo == "ppo" and not any(
        sampled_by(t, policy.model_name) for e in episodes for t in e.turns if t.role in chosen
    ):
        raise OmarError(
            f"--algo ppo trains only turns {policy.model_name!r} sampled itself (recorded log-probabilities); "
            f"{', '.join(map(str, files))} hold none of roles {', '.join(chosen)}: use --algo sft or filtered-bc"
        )
    sources = sources_record(files, chosen, _reward_name(reward))
    # cloning: `update.epochs` passes over the file, one pass an iteration (more epochs later extend the run)
    trainer_config = replace(config, update=replace(config.update, epochs=1)) if cloning else config
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None:
        _check_resumable(checkpoint, trainer_config)
        saved = (
            json.loads((run_dir / SOURCES_FILE).read_text()) if (run_dir / SOURCES_FILE).exists() else None
        )
        if saved != sources:
            raise CheckpointError(f"{run_dir} was trained from other files, roles or reward; use a new --out")
    else:
        seed_everything(config.update.seed)
    trainer = PPOTrainer(policy, trainer_config, ADAPTER)
    ema = EmaBaseline(decay=config.advantage.ema_decay)
    start = resume_or_start(checkpoint, trainer, ema)
    log = MetricsLog(run_dir) if process.is_main_process else None
    if log is not None:
        write_atomic(run_dir / "config.yaml", config.to_yaml())
        write_atomic(run_dir / SOURCES_FILE, json.dumps(sources, indent=2) + "\n")
        log.keep_before(start)
    chunks = iteration_chunks(episodes, config.selfplay.episodes_per_iteration)
    epochs = config.update.resolved_epochs if cloning else 1
    schedule = [(epoch, chunk) for epoch in range(epochs) for chunk in chunks]
    history = []
    for iteration in tqdm(
        range(start, len(schedule)),
        desc="iterations",
        disable=not progress,
        initial=start,
        total=len(schedule),
    ):
        epoch, chunk = schedule[iteration]
        record: dict[str, Any] = {"iteration": iteration, "epoch": epoch, "episodes": float(len(chunk))}
        record.update({f"turns_{k}": float(v) for k, v in _source_counts(chunk, chosen).items()})
        record.update(mark_degenerate(chunk, config.degenerate))
        record.update(_reward_means(chunk, chosen))
        if process.is_main_process and epoch == 0:
            write_episodes(run_dir / "trajectories.jsonl", chunk)
        trained = ppo_episodes(chunk, chosen, policy.model_name) if algo == "ppo" else chunk
        if algo == "ppo":
            batch = build_batch(trained, config.advantage, ema, policy.tokenizer.pad_token_id)
        else:
            batch, counts = bc_batch(chunk, chosen, policy, config)
            record.update(counts)
        if batch is None:
            record["skipped_update"] = 1.0
        else:
            record.update(trainer.update(batch, trained))
            if record.get("bc_tokenized_turns"):  # their "old" log-probabilities are placeholders
                for key in ("logprob_mismatch", "logprob_mismatch_tokens"):
                    record.pop(key, None)
        # after the update: critic mode's advantages are computed inside it. The replies' token cap was the
        # recording's: max_tokens None (raising --max-tokens is no remedy)
        metrics = record | (batch.metrics if batch is not None else {})
        reason = untrained_reason(batch, metrics, trained, config.advantage, None)
        if reason is not None:
            warnings.warn(f"iteration {iteration} trained no turn: {reason}", TrainingWarning, stacklevel=2)
            record["untrained"] = 1.0
        elif batch is not None and (note := degenerate_note(batch, config.advantage, None)):
            warnings.warn(f"iteration {iteration}: {note}", TrainingWarning, stacklevel=2)
        # after the update: critic mode's advantages are computed inside it
        reason = untrained_reason(batch, record | (batch.metrics if batch is not None else {}))
        if reason is not None:
            warnings.warn(f"iteration {iteration} trained no turn: {reason}", TrainingWarning, stacklevel=2)
            record["untrained"] = 1.0
        if log is not None:
            log.append(record)
        history.append(record)
        done = iteration + 1
        if done % config.selfplay.checkpoint_every == 0 or done == len(schedule):
            process.wait_for_everyone()
            if process.is_main_process:
                save_checkpoint(run_dir, done, trainer, ema, keep=config.selfplay.keep_checkpoints)
            process.wait_for_everyone()
    if process.is_main_process:
        export_adapter(trainer, run_dir)
    return history


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


def _reward_means(episodes: Sequence[Episode], roles: Sequence[str]) -> dict[str, float]:
    """reward_mean over the chosen roles' rewards, and reward_ROLE per role (rewards it has)."""
    values: dict[str, list[float]] = {}
    for episode in episodes:
        for role, value in episode.rewards.items():
            if role in roles:
                values.setdefault(role, []).append(value)
    every = [v for vs in values.values() for v in vs]
    means = {"reward_mean": sum(every) / len(every)} if every else {}
    means.update({f"reward_{role}": sum(vs) / len(vs) for role, vs in values.items()})
    return means
