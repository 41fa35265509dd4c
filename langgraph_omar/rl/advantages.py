"""Advantage estimators: pure functions over tensors (docs/design.md §4).

Critic mode (OMAR): `hierarchical_gae` for one role in one episode, `hierarchical_gae_batched` for padded
batches. Critic-free mode: `discounted_returns` + `group_turn_advantages` (group baseline) or `EmaBaseline`
(SPIRAL's role-conditioned baseline), then `spread_turn_advantage` down to tokens. Episode level:
`grpo_advantages`, `rloo_advantages`. Weighting and normalisation: `role_balance_weights`,
`role_balance_token_weights`, `whiten`, `whiten_by_group`.

Advantages are constants for the loss: every function here works on detached inputs and returns tensors
without autograd history.

Standard deviations are population ones (divide by n), so a group of identical values has advantage 0 and a
group of one sample is defined.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

GroupIds = Sequence[Hashable] | Tensor


# ---------------------------------------------------------------------------------------------------------
# Critic mode: hierarchical GAE
# ---------------------------------------------------------------------------------------------------------


def hierarchical_gae(
    token_values: Sequence[Tensor],
    turn_rewards: Tensor,
    gamma_turn: float,
    lam_turn: float,
    gamma_token: float,
    lam_token: float,
    degenerate_turns: Tensor | None = None,
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Two-level GAE for one role's K turns in one episode.

    token_values: K tensors, the k-th of shape (L_k,): the critic's value at each generated token of turn k.
    turn_rewards: (K,) reward r_k of each turn (by default 0 except the terminal reward at turn K).
    degenerate_turns: optional (K,) bool; a degenerate turn's token-level pseudo-reward r'_{L_k} is set to 0
        (OMAR's judge), so its tokens are pushed towards "worth nothing" whatever the turn level says.
    Returns (turn_advantages (K,), token_advantages [K x (L_k,)], token_returns [K x (L_k,)]) where
    token_returns = token_advantages + token_values are the value targets.

    Turn level: V_k = value at the last token of turn k, V_{K+1} = 0, delta_k = r_k + g V_{k+1} - V_k,
    A_k = delta_k + g l A_{k+1}. Token level inside turn k: r'_t = 0 for t < L_k, r'_{L_k} = A_k + V_k,
    V_{L_k+1} = 0 (the chain restarts at each turn), so the advantage at a turn's last token equals A_k.
    A turn with no tokens has no value estimate and raises ValueError; K = 0 returns empty results.
    """
    num_turns = len(token_values)
    if turn_rewards.shape != (num_turns,):
        raise ValueError(
            f"turn_rewards must have shape ({num_turns},) (one per turn), got {tuple(turn_rewards.shape)}"
        )
    for k, values in enumerate(token_values):
        if values.dim() != 1 or values.numel() == 0:
            raise ValueError(
                f"token_values[{k}] must be a non-empty 1-D tensor, got shape {tuple(values.shape)}"
            )
    if degenerate_turns is not None and degenerate_turns.shape != (num_turns,):
        raise ValueError(
            f"degenerate_turns must have shape ({num_turns},), got {tuple(degenerate_turns.shape)}"
        )
    if num_turns == 0:
        return turn_rewards.detach().new_zeros(0, dtype=_float_dtype(turn_rewards.dtype)), [], []
    dtype = _float_dtype(torch.promote_types(turn_rewards.dtype, token_values[0].dtype))
    rewards = turn_rewards.detach().to(dtype)
    turn_values = torch.stack([v.detach()[-1] for v in token_values]).to(dtype)
    turn_advantages = torch.zeros_like(rewards)
    next_value = rewards.new_zeros(())
    next_advantage = rewards.new_zeros(())
    for k in reversed(range(num_turns)):
        delta = rewards[k] + gamma_turn * next_value - turn_values[k]
        next_advantage = delta + gamma_turn * lam_turn * next_advantage
        turn_advantages[k] = next_advantage
        next_value = turn_values[k]

    token_advantages: list[Tensor] = []
    token_returns: list[Tensor] = []
    for k, values in enumerate(token_values):
        values = values.detach().to(dtype)
        pseudo_rewards = torch.zeros_like(values)
        is_degenerate = degenerate_turns is not None and bool(degenerate_turns[k])
        pseudo_rewards[-1] = 0.0 if is_degenerate else turn_advantages[k] + turn_values[k]
        advantages = _gae(values, pseudo_rewards, gamma_token, lam_token)
        token_advantages.append(advantages)
        token_returns.append(advantages + values)
    return turn_advantages, token_advantages, token_returns


def _float_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype.is_floating_point else torch.float32


def _gae(values: Tensor, rewards: Tensor, gamma: float, lam: float) -> Tensor:
    """Plain GAE over one chain with a zero value after its end. values, rewards: (L,) -> (L,)."""
    advantages = torch.zeros_like(values)
    next_value = values.new_zeros(())
    next_advantage = values.new_zeros(())
    for t in reversed(range(values.numel())):
        delta = rewards[t] + gamma * next_value - values[t]
        next_advantage = delta + gamma * lam * next_advantage
        advantages[t] = next_advantage
        next_value = values[t]
    return advantages


def hierarchical_gae_batched(
    token_values: Tensor,
    token_mask: Tensor,
    turn_rewards: Tensor,
    gamma_turn: float,
    lam_turn: float,
    gamma_token: float,
    lam_token: float,
    degenerate_turns: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """`hierarchical_gae` over B padded (episode, role) trajectories, vectorised over the batch.

    token_values: (B, K, L) values; token_mask: (B, K, L) bool, True on real tokens. Each turn's tokens are a
        prefix of its row (positions 0..L_k-1) and a trajectory's real turns are a prefix of its K turns (a
        turn is real iff it has at least one token); anything else raises ValueError.
    turn_rewards: (B, K), ignored on padding turns. degenerate_turns: optional (B, K) bool.
    Returns (turn_advantages (B, K), token_advantages (B, K, L), token_returns (B, K, L)); zero on padding.
    """
    if token_values.dim() != 3 or token_mask.shape != token_values.shape:
        raise ValueError(
            f"token_values and token_mask must both have shape (B, K, L), got {tuple(token_values.shape)} "
            f"and {tuple(token_mask.shape)}"
        )
    batch, max_turns, max_tokens = token_values.shape
    if turn_rewards.shape != (batch, max_turns):
        raise ValueError(
            f"turn_rewards must have shape ({batch}, {max_turns}), got {tuple(turn_rewards.shape)}"
        )
    if degenerate_turns is not None and degenerate_turns.shape != (batch, max_turns):
        raise ValueError(
            f"degenerate_turns must have shape ({batch}, {max_turns}), got {tuple(degenerate_turns.shape)}"
        )
    mask = token_mask.bool()
    lengths = mask.sum(-1)  # (B, K)
    positions = torch.arange(max_tokens, device=mask.device)
    if not torch.equal(mask, positions < lengths.unsqueeze(-1)):
        raise ValueError("token_mask must mark a prefix of each turn's L positions (left-aligned tokens)")
    turn_mask = lengths > 0
    turn_positions = torch.arange(max_turns, device=mask.device)
    if not torch.equal(turn_mask, turn_positions < turn_mask.sum(-1, keepdim=True)):
        raise ValueError("real turns (those with tokens) must be a prefix of each trajectory's K turns")

    values = token_values.detach() * mask
    rewards = turn_rewards.detach().to(values.dtype) * turn_mask
    last_index = (lengths - 1).clamp(min=0).unsqueeze(-1)
    turn_values = values.gather(-1, last_index).squeeze(-1)  # (B, K); 0 on padding turns

    turn_advantages = torch.zeros_like(rewards)
    next_value = rewards.new_zeros(batch)
    next_advantage = rewards.new_zeros(batch)
    for k in reversed(range(max_turns)):
        delta = rewards[:, k] + gamma_turn * next_value - turn_values[:, k]
        advantage = (delta + gamma_turn * lam_turn * next_advantage) * turn_mask[:, k]
        turn_advantages[:, k] = advantage
        next_value, next_advantage = turn_values[:, k], advantage  # both 0 on padding turns

    pseudo_value = turn_advantages + turn_values
    if degenerate_turns is not None:
        pseudo_value = pseudo_value.masked_fill(degenerate_turns.bool(), 0.0)
    pseudo_rewards = torch.zeros_like(values).scatter(
        -1, last_index, (pseudo_value * turn_mask).unsqueeze(-1)
    )
    token_advantages = torch.zeros_like(values)
    next_value = values.new_zeros(batch, max_turns)
    next_advantage = values.new_zeros(batch, max_turns)
    for t in reversed(range(max_tokens)):
        delta = pseudo_rewards[..., t] + gamma_token * next_value - values[..., t]
        advantage = (delta + gamma_token * lam_token * next_advantage) * mask[..., t]
        token_advantages[..., t] = advantage
        next_value, next_advantage = values[..., t], advantage  # both 0 past a turn's last token
    return turn_advantages, token_advantages, (token_advantages + values) * mask


def pad_trajectories(token_values: Sequence[Sequence[Tensor]]) -> tuple[Tensor, Tensor]:
    """Pack B trajectories of per-turn value vectors into ((B, K, L) values, (B, K, L) bool mask)."""
    batch = len(token_values)
    max_turns = max((len(turns) for turns in token_values), default=0)
    max_tokens = max((v.numel() for turns in token_values for v in turns), default=0)
    dtype = next((v.dtype for turns in token_values for v in turns), torch.float32)
    values = torch.zeros(batch, max_turns, max_tokens, dtype=dtype)
    mask = torch.zeros(batch, max_turns, max_tokens, dtype=torch.bool)
    for b, turns in enumerate(token_values):
        for k, turn in enumerate(turns):
            values[b, k, : turn.numel()] = turn.detach()
            mask[b, k, : turn.numel()] = True
    return values, mask


# ---------------------------------------------------------------------------------------------------------
# Critic-free mode
# ---------------------------------------------------------------------------------------------------------


def discounted_returns(turn_rewards: Tensor, gamma: float) -> Tensor:
    """G_k = sum_{j >= k} gamma^(j-k) r_j. turn_rewards: (K,) -> (K,)."""
    if turn_rewards.dim() != 1:
        raise ValueError(f"turn_rewards must be 1-D (K,), got shape {tuple(turn_rewards.shape)}")
    rewards = turn_rewards.detach()
    returns = torch.zeros_like(rewards)
    running = rewards.new_zeros(())
    for k in reversed(range(rewards.numel())):
        running = rewards[k] + gamma * running
        returns[k] = running
    return returns


def group_turn_advantages(returns_per_episode: Sequence[Tensor], eps: float = 1e-6) -> list[Tensor]:
    """Critic-free turn advantages for one role over a group of episodes of the same scenario.

    returns_per_episode: one (K_i,) tensor of discounted returns G_k per episode (see `discounted_returns`).
    The baseline b and scale sigma pool the G_k of every turn of every episode in the group (GRPO-style):
    A_k = (G_k - b) / (sigma + eps). Returns one (K_i,) tensor per episode.
    A group of one episode only compares that episode's turns with each other: callers with single-episode
    groups should use `EmaBaseline` instead (docs/design.md §4).
    """
    if not returns_per_episode:
        return []
    for i, returns in enumerate(returns_per_episode):
        if returns.dim() != 1:
            raise ValueError(f"returns_per_episode[{i}] must be 1-D (K,), got shape {tuple(returns.shape)}")
    pooled = torch.cat([r.detach() for r in returns_per_episode])
    if pooled.numel() == 0:
        return [r.detach().clone() for r in returns_per_episode]
    baseline = pooled.mean()
    scale = pooled.std(unbiased=False) + eps
    return [(r.detach() - baseline) / scale for r in returns_per_episode]


def spread_turn_advantage(turn_advantage: float, num_tokens: int, gamma: float = 1.0) -> Tensor:
    """Token advantages of one turn in critic-free mode: token t gets A * gamma^(L-1-t). Returns (L,)."""
    if num_tokens < 0:
        raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
    exponents = torch.arange(num_tokens - 1, -1, -1, dtype=torch.float32)
    return float(turn_advantage) * torch.pow(torch.tensor(gamma, dtype=torch.float32), exponents)


class EmaBaseline:
    """SPIRAL's role-conditioned advantage: per (key, role) b <- decay b + (1 - decay) R, A = R - b.

    The key is the game or scenario. The baseline is read before its update, so the first reward of a
    (key, role) is compared with `initial_value`. Several rewards of the same (key, role) are processed in
    the order given, each reading the baseline its predecessors left.
    """

    def __init__(self, decay: float = 0.95, initial_value: float = 0.0) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EmaBaseline decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.initial_value = initial_value
        self._baselines: dict[tuple[str, str], float] = {}

    def baseline(self, key: str, role: str) -> float:
        return self._baselines.get((key, role), self.initial_value)

    def advantage(self, key: str, role: str, reward: float) -> float:
        """A = R - b with b read before the update; then updates b."""
        before = self.baseline(key, role)
        self._baselines[(key, role)] = self.decay * before + (1.0 - self.decay) * float(reward)
        return float(reward) - before

    def advantages(self, keys: Sequence[str], roles: Sequence[str], rewards: Tensor) -> Tensor:
        """Sequential `advantage` over N samples. rewards: (N,) -> (N,)."""
        if not len(keys) == len(roles) == rewards.numel():
            raise ValueError(f"got {len(keys)} keys, {len(roles)} roles and {rewards.numel()} rewards")
        values = [
            self.advantage(k, r, float(x)) for k, r, x in zip(keys, roles, rewards.tolist(), strict=True)
        ]
        return torch.tensor(values, dtype=rewards.dtype if rewards.is_floating_point() else torch.float32)

    def state_dict(self) -> dict[str, Any]:
        baselines = [[key, role, value] for (key, role), value in sorted(self._baselines.items())]
        return {"decay": self.decay, "initial_value": self.initial_value, "baselines": baselines}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name in ("decay", "initial_value", "baselines"):
            if name not in state:
                raise ValueError(f"EmaBaseline state is missing key {name!r}")
        loaded: dict[tuple[str, str], float] = {}
        for i, entry in enumerate(state["baselines"]):
            if len(entry) != 3:
                raise ValueError(
                    f"EmaBaseline state baselines[{i}] must be [key, role, value], got {entry!r}"
                )
            key, role, value = entry
            loaded[(str(key), str(role))] = float(value)
        decay = float(state["decay"])
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EmaBaseline state decay must be in [0, 1), got {decay}")
        self.decay, self.initial_value, self._baselines = decay, float(state["initial_value"]), loaded


# ---------------------------------------------------------------------------------------------------------
# Episode level: GRPO and RLOO
# ---------------------------------------------------------------------------------------------------------


def group_index(group_ids: GroupIds, num_items: int) -> tuple[Tensor, int]:
    """Map N group ids (any hashables, or an (N,) tensor) to ((N,) long indices in [0, G), G)."""
    if isinstance(group_ids, Tensor):
        if group_ids.shape != (num_items,):
            raise ValueError(f"group_ids must have shape ({num_items},), got {tuple(group_ids.shape)}")
        unique, index = torch.unique(group_ids, return_inverse=True)
        return index, unique.numel()
    if len(group_ids) != num_items:
        raise ValueError(f"got {len(group_ids)} group ids for {num_items} items")
    positions: dict[Hashable, int] = {}
    index_list = [positions.setdefault(g, len(positions)) for g in group_ids]
    return torch.tensor(index_list, dtype=torch.long), len(positions)


def _group_mean_std(values: Tensor, weights: Tensor, index: Tensor, num_groups: int) -> tuple[Tensor, Tensor]:
    """Weighted per-group mean and population std. values, weights: (N, M); index: (N,) -> (G,), (G,)."""
    counts = values.new_zeros(num_groups).index_add_(0, index, weights.sum(-1))
    sums = values.new_zeros(num_groups).index_add_(0, index, (values * weights).sum(-1))
    means = sums / counts.clamp(min=1)
    squares = ((values - means[index].unsqueeze(-1)) ** 2 * weights).sum(-1)
    variances = values.new_zeros(num_groups).index_add_(0, index, squares) / counts.clamp(min=1)
    return means, variances.sqrt()


def grpo_advantages(rewards: Tensor, group_ids: GroupIds, eps: float = 1e-6, scale: bool = True) -> Tensor:
    """A_i = (R_i - mean_g) / (std_g + eps) within each group g (std_g: population); without `scale`,
    A_i = R_i - mean_g. rewards: (N,) -> (N,). A group of one sample gets advantage 0."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (N,), got shape {tuple(rewards.shape)}")
    values = rewards.detach().float() if not rewards.is_floating_point() else rewards.detach()
    index, num_groups = group_index(group_ids, values.numel())
    index = index.to(values.device)
    means, stds = _group_mean_std(
        values.unsqueeze(-1), torch.ones_like(values).unsqueeze(-1), index, num_groups
    )
    centred = values - means[index]
    return centred / (stds[index] + eps) if scale else centred


def rloo_advantages(rewards: Tensor, group_ids: GroupIds) -> Tensor:
    """Leave-one-out: A_i = R_i - mean_{j != i in g} R_j = n/(n-1) (R_i - mean_g). rewards: (N,) -> (N,).
    Every group needs at least two samples (ValueError otherwise)."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (N,), got shape {tuple(rewards.shape)}")
    values = rewards.detach().float() if not rewards.is_floating_point() else rewards.detach()
    index, num_groups = group_index(group_ids, values.numel())
    index = index.to(values.device)
    counts = values.new_zeros(num_groups).index_add_(0, index, torch.ones_like(values))
    if num_groups and counts.min() < 2:
        raise ValueError(f"RLOO needs at least 2 samples per group; group #{int(counts.argmin())} has 1")
    sums = values.new_zeros(num_groups).index_add_(0, index, values)
    return values - (sums[index] - values) / (counts[index] - 1)


# ---------------------------------------------------------------------------------------------------------
# Role balance (MARO) and whitening
# ---------------------------------------------------------------------------------------------------------


def role_balance_weights(
    role_token_counts: Mapping[str, int | Tensor],
    win_rates: Mapping[str, float] | None = None,
    inverse_win_rate: bool = False,
    min_win_rate: float = 0.05,
) -> dict[str, float]:
    """Per-token weight of each role so that every role carries the same total weight in the loss.

    With N tokens over R roles that have tokens, role r's n_r tokens each get w_r = N s_r / n_r with share
    s_r = 1/R, so sum_r w_r n_r = N: the mean token weight is 1. With `inverse_win_rate`, s_r is proportional
    to 1 / max(win_rate_r, min_win_rate) (roles that lose more weigh more). A role with 0 tokens gets 0.
    """
    counts = {role: int(n) for role, n in role_token_counts.items()}
    for role, n in counts.items():
        if n < 0:
            raise ValueError(f"role {role!r} has a negative token count {n}")
    active = [role for role, n in counts.items() if n > 0]
    if inverse_win_rate:
        if win_rates is None:
            raise ValueError("inverse_win_rate=True needs win_rates")
        missing = [role for role in active if role not in win_rates]
        if missing:
            raise ValueError(f"win_rates has no entry for roles {missing}")
        for role in active:
            if not 0.0 <= win_rates[role] <= 1.0:
                raise ValueError(f"win rate of role {role!r} must be in [0, 1], got {win_rates[role]}")
        raw = {role: 1.0 / max(win_rates[role], min_win_rate) for role in active}
    else:
        raw = {role: 1.0 for role in active}
    total_raw = sum(raw.values())
    total_tokens = sum(counts[role] for role in active)
    return {
        role: (total_tokens * raw[role] / total_raw / counts[role] if role in raw else 0.0) for role in counts
    }


def role_balance_token_weights(
    row_roles: Sequence[str],
    mask: Tensor,
    win_rates: Mapping[str, float] | None = None,
    inverse_win_rate: bool = False,
) -> Tensor:
    """`role_balance_weights` laid out on a batch: row_roles (B,), mask (B, T) -> (B, T), 0 off mask."""
    if len(row_roles) != mask.shape[0]:
        raise ValueError(f"got {len(row_roles)} row roles for a mask of {mask.shape[0]} rows")
    row_counts = mask.reshape(mask.shape[0], -1).sum(-1).tolist()
    counts: dict[str, int] = {}
    for role, n in zip(row_roles, row_counts, strict=True):
        counts[role] = counts.get(role, 0) + int(n)
    weights = role_balance_weights(counts, win_rates, inverse_win_rate)
    per_row = torch.tensor([weights[role] for role in row_roles], dtype=torch.float32, device=mask.device)
    return per_row.view(-1, *([1] * (mask.dim() - 1))) * mask.float()


def whiten(values: Tensor, mask: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """(x - mean) / (std + eps) over the masked entries (population std); 0 where mask is False. Any shape."""
    return whiten_by_group(
        values.reshape(1, -1), [0], None if mask is None else mask.reshape(1, -1), eps
    ).view_as(values)


def whiten_by_group(
    values: Tensor, group_ids: GroupIds, mask: Tensor | None = None, eps: float = 1e-8
) -> Tensor:
    """`whiten` separately within each group of rows: values (N, ...), group_ids (N,), mask like values.

    Pass role names as group ids to whiten per role, or one id for the whole batch.
    """
    if mask is not None and mask.shape != values.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from values shape {tuple(values.shape)}")
    flat = values.detach().reshape(values.shape[0], -1)
    weights = torch.ones_like(flat) if mask is None else mask.reshape(flat.shape).to(flat.dtype)
    index, num_groups = group_index(group_ids, flat.shape[0])
    index = index.to(flat.device)
    means, stds = _group_mean_std(flat, weights, index, num_groups)
    whitened = (flat - means[index].unsqueeze(-1)) / (stds[index].unsqueeze(-1) + eps) * weights
    return whitened.view_as(values)
