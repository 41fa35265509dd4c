"""Training rows of recorded turns: behaviour-cloning rows of any turn, PPO copies of the policy's own.

A turn the policy itself sampled (source "policy", recorded by the same model) trains on its recorded ids; any
other turn (another model's, a person's, or another local model's) is tokenized from its recorded `messages`
and text with the policy's chat template (`render_text_turn`). Only the policy's own turns are PPO data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from langgraph_omar.errors import OmarError
from langgraph_omar.rl.batch import TrainingBatch, TurnSample, filtered_bc_rows, pad_samples
from langgraph_omar.rl.config import RunConfig
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.trajectory import Episode, Turn


def sampled_by(turn: Turn, model: str) -> bool:
    """Whether `turn`'s recorded ids are the trained model's own: the policy sampled it, on that model
    (version 1 files did not record the model: their turns are taken as the model's)."""
    return turn.source == "policy" and turn.model in (None, model)


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
