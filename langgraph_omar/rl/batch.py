"""Episodes -> a padded training batch, token for token (nothing is re-tokenized).

Each trained turn is one row: input ids = the turn's recorded prompt ids + completion ids, right-padded.
Per-position tensors are aligned with `input_ids`: position p holds the quantities of the token at p (its
recorded sampling log-probability, its advantage, ...), and `completion_mask` is True exactly at the
turn's completion tokens. The trainer predicts the token at p from the hidden state at p - 1.

Which turns are trained: turns whose agent has a terminal reward (`Episode.reward_of`: its own in
`agent_rewards`, else its role's in `rewards`; a narrator or a judge model call has none), of episodes whose
status is "ok". A trajectory is one agent's turns in one episode (the agent defaults to the role, so a graph that
names no agent has one per role): two werewolves are two turn chains, each ending on its own reward, while
baselines, whitening and role balance group the chains by role. Turn k of an agent earns
r_k = turn_reward_weight * Turn.reward (MARO's behaviour-level reward) + the agent's terminal reward on its last
turn. Advantages by mode (docs/design.md §4):
- `hierarchical`: per agent, G_k = sum_{j>=k} gamma^(j-k) r_j, compared at each turn position k with the G_k of
  the role's chains in the episodes sharing `metadata["group_id"]` (`group_turn_advantages`); a position that
  no other episode of the group reached (a group of one episode, or a longer episode's last turns) uses
  SPIRAL's EMA baseline of that position instead, keyed by `metadata["baseline_key"]` (the game; else
  `scenario_id`) and the role; spread over the turn's tokens. The agents of one episode are never each other's
  only baseline: teammates' returns differ by their own fates, and comparing them alone would cancel the
  episode's shared outcome.
- `grpo`: the agent's episode return, normalised over the role's chains in its group; every token of the agent
  gets it. A group of one episode gives 0.
- `rloo`: the agent's episode return minus the mean return of the role's other chains in its group (0 for a
  group of one episode).
- `rae`: the agent's episode return minus the EMA baseline of (scenario, role).
- `hierarchical-critic`: `assign_critic_advantages` after the trainer computed the values.
Degenerate turns (see `degenerate`), in every mode, get no policy signal: advantage 0, and they count neither
in the whitening statistics nor in the role balance; they stay in the agent's turn chain (their rewards reach
the earlier turns, the critic learns their values). With `degenerate_penalty` p > 0 they instead train like any
turn and their own turn reward is lowered by p (a format penalty: dense signal when the outcome reward is
almost always 0).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from langgraph_omar.rl.advantages import (
    EmaBaseline,
    discounted_returns,
    group_turn_advantages,
    grpo_advantages,
    hierarchical_gae,
    rloo_advantages,
    role_balance_token_weights,
    spread_turn_advantage,
    whiten_by_group,
)
from langgraph_omar.rl.config import AdvantageSettings, FilterSettings
from langgraph_omar.trajectory import Episode
from langgraph_omar.trajectory.metadata import GROUP_ID, SCENARIO_ID


@dataclass(frozen=True)
class TurnSample:
    """One trained turn and where it came from."""

    episode_index: int
    turn_index: int  # index in episode.turns
    role: str
    group_key: str  # episodes sharing it form a group (metadata["group_id"], else the episode id)
    scenario_key: str  # the EMA baseline's key: metadata "baseline_key", else "scenario_id", else the group
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    temperature: float
    degenerate: str | None
    agent: str = ""  # whose turn chain the turn extends; "" means the role

    def __post_init__(self) -> None:
        if not self.agent:
            object.__setattr__(self, "agent", self.role)


@dataclass
class TrainingBatch:
    """N rows of length T. Per-position tensors are (N, T) and aligned with input_ids."""

    input_ids: Tensor  # (N, T) long, right-padded with the pad id
    attention_mask: Tensor  # (N, T) long
    completion_mask: Tensor  # (N, T) bool: the row's completion tokens
    old_logprobs: Tensor  # (N, T) float: recorded sampling log-probabilities, 0 off the completion
    advantages: Tensor  # (N, T) float
    weights: Tensor  # (N, T) float: per-token loss weights (role balance), 0 off the completion
    temperatures: Tensor  # (N,) float: the temperature the log-probabilities are tempered with (1 if greedy)
    samples: list[TurnSample]
    returns: Tensor | None = None  # (N, T) value targets of the tokens (critic mode)
    # (N, T) critic mode: at p, the value before the update of the state in which token p was chosen (the
    # hidden state at p - 1, whose logits give token p's log-probability); 0 at position 0
    old_values: Tensor | None = None
    behaviour_cloning: bool = False  # train on -logprob of the rows (filtered BC, warm start), not PPO
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def roles(self) -> list[str]:
        return [s.role for s in self.samples]

    @property
    def lengths(self) -> Tensor:
        return self.attention_mask.sum(-1)

    def __len__(self) -> int:
        return len(self.samples)

    def select(self, rows: Sequence[int] | Tensor) -> TrainingBatch:
        """The given rows, trimmed to their longest sequence."""
        index = torch.as_tensor(rows, dtype=torch.long)
        width = int(self.attention_mask[index].sum(-1).max()) if len(index) else 0

        def cut(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[index, :width]

        return replace(
            self,
            input_ids=self.input_ids[index, :width],
            attention_mask=self.attention_mask[index, :width],
            completion_mask=self.completion_mask[index, :width],
            old_logprobs=self.old_logprobs[index, :width],
            advantages=self.advantages[index, :width],
            weights=self.weights[index, :width],
            temperatures=self.temperatures[index],
            samples=[self.samples[int(i)] for i in index],
            returns=cut(self.returns),
            old_values=cut(self.old_values),
            metrics={},
        )


def collect_samples(
    episodes: Sequence[Episode], trained_adapter: str | None = None
) -> tuple[list[TurnSample], dict[str, float]]:
    """The trained turns of `episodes` in order, and counts of what was left out. Only turns the policy
    sampled (source "policy") are kept. With `trained_adapter`, a turn recorded as played by another adapter
    (the base model as an opponent) is not the policy's."""
    samples: list[TurnSample] = []
    failed = unrewarded = other_seat = other_source = 0
    for e, episode in enumerate(episodes):
        if episode.status != "ok":
            failed += 1
            continue
        group = str(episode.metadata.get(GROUP_ID, episode.episode_id))
        meta = episode.metadata
        scenario = str(meta.get("baseline_key", meta.get(SCENARIO_ID, group)))
        for t, turn in enumerate(episode.turns):
            if turn.source != "policy":  # another model's or a person's: no recorded ids, never PPO data
                other_source += 1
                continue
            if trained_adapter is not None and turn.adapter != trained_adapter:
                other_seat += 1
                continue
            if episode.reward_of(turn) is None:
                unrewarded += 1
                continue
            if not turn.completion_ids:  # nothing to train on; counted as degenerate ("empty") upstream
                continue
            samples.append(
                TurnSample(
                    e,
                    t,
                    turn.role,
                    group,
                    scenario,
                    list(turn.prompt_ids),
                    list(turn.completion_ids),
                    list(turn.logprobs),
                    turn.temperature if turn.temperature > 0 else 1.0,  # greedy calls record T = 1
                    turn.degenerate,
                    turn.agent,
                )
            )
    return samples, {
        "failed_episodes": failed,
        "unrewarded_turns": unrewarded,
        "other_seat_turns": other_seat,
        "other_source_turns": other_source,
    }


def pad_samples(samples: Sequence[TurnSample], pad_id: int) -> TrainingBatch:
    """Rows of prompt + completion ids, right-padded; advantages 0 and weights 1 on completion tokens."""
    if not samples:
        raise ValueError("pad_samples: no turns to train on (every episode failed or had no rewarded turn)")
    width = max(len(s.prompt_ids) + len(s.completion_ids) for s in samples)
    n = len(samples)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    completion = torch.zeros((n, width), dtype=torch.bool)
    old_logprobs = torch.zeros((n, width), dtype=torch.float32)
    for i, s in enumerate(samples):
        p, c = len(s.prompt_ids), len(s.completion_ids)
        input_ids[i, : p + c] = torch.tensor(s.prompt_ids + s.completion_ids, dtype=torch.long)
        attention[i, : p + c] = 1
        completion[i, p : p + c] = True
        old_logprobs[i, p : p + c] = torch.tensor(s.logprobs, dtype=torch.float32)
    return TrainingBatch(
        input_ids=input_ids,
        attention_mask=attention,
        completion_mask=completion,
        old_logprobs=old_logprobs,
        advantages=torch.zeros((n, width)),
        weights=completion.float(),
        temperatures=torch.tensor([s.temperature for s in samples], dtype=torch.float32),
        samples=list(samples),
    )


def _agent_turns(samples: Sequence[TurnSample]) -> dict[tuple[int, str, str], list[int]]:
    """(episode index, role, agent) -> sample rows of that agent's turns, in turn order: one trajectory each."""
    rows: dict[tuple[int, str, str], list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        rows[(s.episode_index, s.role, s.agent)].append(i)
    return rows


def _turn_rewards(
    episodes: Sequence[Episode], samples: Sequence[TurnSample], rows: list[int], settings: AdvantageSettings
) -> Tensor:
    """r_k = turn_reward_weight * the turn's own reward (minus `degenerate_penalty` if degenerate), plus the
    agent's terminal reward on its last turn. (K,)"""
    episode = episodes[samples[rows[0]].episode_index]
    weight, penalty = settings.turn_reward_weight, settings.degenerate_penalty
    rewards = torch.tensor(
        [
            weight * episode.turns[samples[i].turn_index].reward - (penalty if samples[i].degenerate else 0.0)
            for i in rows
        ],
        dtype=torch.float32,
    )
    terminal = episode.reward_of(episode.turns[samples[rows[-1]].turn_index])
    if terminal is not None:  # collect_samples keeps only the turns of agents that have one
        rewards[-1] += float(terminal)
    return rewards


def critic_free_turn_advantages(
    episodes: Sequence[Episode],
    samples: Sequence[TurnSample],
    settings: AdvantageSettings,
    ema: EmaBaseline,
) -> Tensor:
    """One advantage per sample (N,) for the critic-free modes; `ema` is read and updated in episode order."""
    if settings.mode == "hierarchical-critic":
        raise ValueError("critic mode needs values: use assign_critic_advantages")
    by_role = _agent_turns(samples)  # keys (episode, role, agent): key[1] is the role
    returns = {
        key: discounted_returns(_turn_rewards(episodes, samples, rows, settings), settings.gamma_turn)
        for key, rows in by_role.items()
    }
    advantages = torch.zeros(len(samples))
    groups: dict[tuple[str, str], list[tuple[int, str, str]]] = defaultdict(list)
    for key in by_role:
        groups[(samples[by_role[key][0]].group_key, key[1])].append(key)
    if settings.mode in ("grpo", "rloo"):
        keys = list(by_role)
        episode_returns = torch.stack([returns[k][0] for k in keys])
        group_ids = [(samples[by_role[k][0]].group_key, k[1]) for k in keys]
        values = (
            grpo_advantages(episode_returns, group_ids, eps=settings.eps)
            if settings.mode == "grpo"
            else rloo_advantages(episode_returns, group_ids)
        )
        alone = {g for g, members in groups.items() if len({k[0] for k in members}) < 2}
        for k, g, value in zip(keys, group_ids, values.tolist(), strict=True):
            advantages[by_role[k]] = 0.0 if g in alone else value
    elif settings.mode == "rae":  # SPIRAL: the episode return against the (game, role) EMA
        for k, rows in by_role.items():
            baseline_key = samples[rows[0]].scenario_key
            advantages[rows] = ema.advantage(baseline_key, k[1], float(returns[k][0]))
    else:
        for members in groups.values():
            group_values, shared = group_turn_advantages([returns[k] for k in members], eps=settings.eps)
            shared = _shared_across_episodes(members, shared)
            for k, values, has_peers in zip(members, group_values, shared, strict=True):
                baseline_key = samples[by_role[k][0]].scenario_key
                for turn, turn_return in enumerate(returns[k].tolist()):
                    # every position's EMA learns its returns; a position no other episode of the group
                    # reached is compared with it (read before the update)
                    ema_advantage = ema.advantage(baseline_key, k[1], turn_return, turn=turn)
                    if not has_peers[turn]:
                        values[turn] = ema_advantage
                advantages[by_role[k]] = values.float()
    if settings.degenerate_penalty > 0:
        return advantages
    degenerate = torch.tensor([s.degenerate is not None for s in samples])
    return advantages.masked_fill(degenerate, 0.0)


def _shared_across_episodes(members: Sequence[tuple[int, str, str]], shared: list[Tensor]) -> list[Tensor]:
    """`shared` (per chain, (K_i,) bool) kept only at the turn positions that chains of two or more episodes
    reached: the chains of one episode's agents are not each other's only baseline."""
    width = max((s.numel() for s in shared), default=0)
    episodes_at: list[set[int]] = [set() for _ in range(width)]
    for (episode, _, _), positions in zip(members, shared, strict=True):
        for k in range(positions.numel()):
            episodes_at[k].add(episode)
    several = torch.tensor([len(e) >= 2 for e in episodes_at], dtype=torch.bool)
    return [s & several[: s.numel()] for s in shared]


def spread_advantages(batch: TrainingBatch, turn_advantages: Tensor, gamma_token: float) -> None:
    """Write each row's turn advantage onto its completion tokens (A gamma^(L-1-t)), in place."""
    batch.advantages = torch.zeros_like(batch.old_logprobs)
    for i, advantage in enumerate(turn_advantages.tolist()):
        positions = batch.completion_mask[i].nonzero().squeeze(-1)
        batch.advantages[i, positions] = spread_turn_advantage(advantage, len(positions), gamma_token)


def assign_critic_advantages(
    batch: TrainingBatch, episodes: Sequence[Episode], values: Tensor, settings: AdvantageSettings
) -> None:
    """Hierarchical GAE per (episode, agent) from token values (N, T) aligned with input_ids (at p: the value
    of the state in which token p was chosen, see `TrainingBatch.old_values`), in place: sets advantages,
    returns (value targets) and old_values."""
    batch.advantages = torch.zeros_like(batch.old_logprobs)
    batch.returns = torch.zeros_like(batch.old_logprobs)
    batch.old_values = (values.detach().float() * batch.completion_mask).cpu()
    for rows in _agent_turns(batch.samples).values():
        masks = [batch.completion_mask[i] for i in rows]
        token_values = [batch.old_values[i][m] for i, m in zip(rows, masks, strict=True)]
        _, token_adv, token_ret = hierarchical_gae(
            token_values,
            _turn_rewards(episodes, batch.samples, rows, settings),
            settings.gamma_turn,
            settings.lam_turn,
            settings.gamma_token,
            settings.lam_token,
        )
        for i, m, adv, ret in zip(rows, masks, token_adv, token_ret, strict=True):
            batch.advantages[i, m] = adv.float()
            batch.returns[i, m] = ret.float()


def finish_advantages(batch: TrainingBatch, episodes: Sequence[Episode], settings: AdvantageSettings) -> None:
    """Whitening (per role or batch) and MARO role-balance weights, in place; degenerate rows get advantage 0
    (unless a degenerate penalty gave them a signal of their own). The role balance counts only the tokens
    that train: those of live rows with a nonzero advantage (the trainer skips a row whose advantages are all
    0, and such a row has no policy gradient anyway); the others get weight 0."""
    penalized = settings.degenerate_penalty > 0
    live = torch.tensor([penalized or s.degenerate is None for s in batch.samples])
    mask = batch.completion_mask & live[:, None]
    mode = settings.whiten_mode
    if mode != "none":
        groups = ["batch"] * len(batch) if mode == "batch" else batch.roles
        batch.advantages = whiten_by_group(
            batch.advantages, groups, mask, eps=settings.eps, center=mode != "role-scale"
        )
    batch.advantages = batch.advantages * mask
    if settings.role_balance:
        trained = mask & (batch.advantages != 0).any(-1, keepdim=True)
        win_rates = role_win_rates(episodes, settings.win_threshold) if settings.inverse_win_rate else None
        batch.weights = role_balance_token_weights(batch.roles, trained, win_rates, settings.inverse_win_rate)
    else:
        batch.weights = batch.completion_mask.float()


def role_win_rates(episodes: Sequence[Episode], threshold: float) -> dict[str, float]:
    """Share of each role's ok episodes in which its terminal reward exceeds `threshold`."""
    wins: dict[str, list[bool]] = defaultdict(list)
    for episode in episodes:
        if episode.status == "ok":
            for role, reward in episode.rewards.items():
                wins[role].append(reward > threshold)
    return {role: sum(v) / len(v) for role, v in wins.items()}


def filtered_bc_rows(
    episodes: Sequence[Episode], samples: Sequence[TurnSample], settings: FilterSettings
) -> list[int]:
    """SOTOPIA-pi's filter: per (group, role), the rows of the top `top_fraction` of the role's trajectories
    (one per agent and episode) by the agent's terminal reward (at least one), further limited to rewards >=
    `min_reward`; degenerate turns dropped."""
    by_group: dict[tuple[str, str], list[tuple[tuple[int, str, str], float]]] = defaultdict(list)
    for key, rows in _agent_turns(samples).items():
        first = samples[rows[0]]
        reward = episodes[first.episode_index].reward_of(
            episodes[first.episode_index].turns[first.turn_index]
        )
        if reward is not None:
            by_group[(first.group_key, first.role)].append((key, reward))
    kept: set[tuple[int, str, str]] = set()
    for members in by_group.values():
        ranked = sorted(members, key=lambda m: -m[1])  # stable: ties keep the order of the turns
        count = max(1, int(len(ranked) * settings.top_fraction + 0.5))
        for key, reward in ranked[:count]:
            if settings.min_reward is None or reward >= settings.min_reward:
                kept.add(key)
    return [
        i
        for i, s in enumerate(samples)
        if (s.episode_index, s.role, s.agent) in kept and s.degenerate is None
    ]


def build_batch(
    episodes: Sequence[Episode],
    settings: AdvantageSettings,
    ema: EmaBaseline,
    pad_id: int,
    bc_filter: FilterSettings | None = None,
    trained_adapter: str | None = None,
) -> TrainingBatch | None:
    """Episodes (degenerate turns already marked) -> a batch with advantages, for the critic-free modes and,
    with `bc_filter`, for filtered behaviour cloning (kept turns: advantage 1; the loss is -mean logprob).
    In critic mode the advantages are left at 0 for `assign_critic_advantages` + `finish_advantages`.
    None when no turn is left to train on (every episode failed, or the filter kept nothing). With
    `trained_adapter`, only the turns that adapter played are trained (see `collect_samples`)."""
    samples, metrics = collect_samples(episodes, trained_adapter)
    if bc_filter is not None:
        rows = filtered_bc_rows(episodes, samples, bc_filter)
        metrics["bc_kept_turns"] = len(rows)
        samples = [samples[i] for i in rows]
    if not samples:
        return None
    batch = pad_samples(samples, pad_id)
    metrics["trajectories"] = len(_agent_turns(samples))  # one per agent per episode
    batch.metrics.update({k: float(v) for k, v in metrics.items()})
    if bc_filter is not None:
        batch.advantages = batch.completion_mask.float()
        batch.behaviour_cloning = True
        return batch
    if settings.mode != "hierarchical-critic":
        turn_adv = critic_free_turn_advantages(episodes, samples, settings, ema)
        spread_advantages(batch, turn_adv, settings.gamma_token)
        finish_advantages(batch, episodes, settings)
    return batch
