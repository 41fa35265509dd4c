"""Advantage estimators: pure functions over tensors (docs/design.md §4).

Critic mode (OMAR): `hierarchical_gae` for one role in one episode. Critic-free mode: `discounted_returns` +
`group_turn_advantages` (a group baseline per turn position) or `EmaBaseline` (SPIRAL's role-conditioned
baseline, per turn position), then `spread_turn_advantage` down to tokens. Episode level: `grpo_advantages`,
`rloo_advantages`. Weighting and normalisation: `role_balance_weights`, `role_balance_token_weights`,
`whiten_by_group`.

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
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Two-level GAE for one role's K turns in one episode.

    token_values: K tensors, the k-th of shape (L_k,): the critic's value of each generated token of turn k,
        i.e. of the state in which the token was chosen.
    turn_rewards: (K,) reward r_k of each turn (by default 0 except the terminal reward at turn K).
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
        pseudo_rewards[-1] = turn_advantages[k] + turn_values[k]
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


def group_turn_advantages(
    returns_per_episode: Sequence[Tensor], eps: float = 1e-6, scale: bool = False
) -> tuple[list[Tensor], list[Tensor]]:
    """Critic-free turn advantages for one role over a group of episodes of the same scenario.

    returns_per_episode: one (K_i,) tensor of discounted returns G_k per episode (see `discounted_returns`).
    Each turn position k has its own baseline: b_k is the mean of the G_k of the episodes that reached their
    k-th turn, and A_k = G_k - b_k (returns of different positions are not comparable once gamma < 1 or turns
    carry rewards of their own). Unscaled, so that these advantages and the `EmaBaseline` ones (G - b) of the
    positions the caller fills in are on one scale; with `scale`, A_k = (G_k - b_k) / (sigma_k + eps), sigma_k
    the population std. A position only one episode of the group reached has no baseline here: its advantage
    is 0 and `shared` is False there, for the caller to use another baseline (`EmaBaseline` at that position,
    docs/design.md §4). Returns (advantages, shared): per episode a (K_i,) float tensor and a (K_i,) bool tensor.
    """
    for i, returns in enumerate(returns_per_episode):
        if returns.dim() != 1:
            raise ValueError(f"returns_per_episode[{i}] must be 1-D (K,), got shape {tuple(returns.shape)}")
    num_turns = max((r.numel() for r in returns_per_episode), default=0)
    if num_turns == 0:
        return [r.detach().clone() for r in returns_per_episode], [
            torch.zeros(0, dtype=torch.bool) for _ in returns_per_episode
        ]
    dtype = _float_dtype(returns_per_episode[0].dtype)
    padded = torch.zeros(len(returns_per_episode), num_turns, dtype=dtype)
    reached = torch.zeros(padded.shape, dtype=torch.bool)
    for i, returns in enumerate(returns_per_episode):
        padded[i, : returns.numel()] = returns.detach()
        reached[i, : returns.numel()] = True
    positions = torch.arange(num_turns)  # each turn position is its own group of the (K, n) transpose
    means, stds = _group_mean_std(padded.T, reached.T.to(dtype), positions, num_turns)
    shared = reached & (reached.sum(0) >= 2)
    centred = padded - means
    advantages = torch.where(shared, centred / (stds + eps) if scale else centred, torch.zeros_like(padded))
    lengths = [r.numel() for r in returns_per_episode]
    return (
        [advantages[i, :n] for i, n in enumerate(lengths)],
        [shared[i, :n] for i, n in enumerate(lengths)],
    )


def spread_turn_advantage(turn_advantage: float, num_tokens: int, gamma: float = 1.0) -> Tensor:
    """Token advantages of one turn in critic-free mode: token t gets A * gamma^(L-1-t). Returns (L,)."""
    if num_tokens < 0:
        raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
    exponents = torch.arange(num_tokens - 1, -1, -1, dtype=torch.float32)
    return float(turn_advantage) * torch.pow(torch.tensor(gamma, dtype=torch.float32), exponents)


class EmaBaseline:
    """SPIRAL's role-conditioned baseline: per (key, role, turn) b <- decay b + (1 - decay) R, A = R - b.

    The key is the game or scenario; `turn` is the role's turn position (0 = its first turn) whose return R
    is: returns of different positions are not comparable (docs/design.md §4), and SPIRAL's episode-level
    baseline (`rae`) is turn 0's. The baseline is read before its update, so the first reward of a
    (key, role, turn) is compared with `initial_value`. Several rewards of the same (key, role, turn) are
    processed in the order given, each reading the baseline its predecessors left.
    """

    def __init__(self, decay: float = 0.95, initial_value: float = 0.0) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EmaBaseline decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.initial_value = initial_value
        self._baselines: dict[tuple[str, str, int], float] = {}

    def baseline(self, key: str, role: str, turn: int = 0) -> float:
        return self._baselines.get((key, role, turn), self.initial_value)

    def advantage(self, key: str, role: str, reward: float, turn: int = 0) -> float:
        """A = R - b with b read before the update; then updates b."""
        before = self.baseline(key, role, turn)
        self._baselines[(key, role, turn)] = self.decay * before + (1.0 - self.decay) * float(reward)
        return float(reward) - before

    def state_dict(self) -> dict[str, Any]:
        baselines = [[key, role, turn, value] for (key, role, turn), value in sorted(self._baselines.items())]
        return {"decay": self.decay, "initial_value": self.initial_value, "baselines": baselines}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Accepts the entries [key, role, turn, value], and [key, role, value] (turn 0) of states saved
        before baselines had turn positions."""
        for name in ("decay", "initial_value", "baselines"):
            if name not in state:
                raise ValueError(f"EmaBaseline state is missing key {name!r}")
        loaded: dict[tuple[str, str, int], float] = {}
        for i, entry in enumerate(state["baselines"]):
            if len(entry) not in (3, 4):
                raise ValueError(
                    f"EmaBaseline state baselines[{i}] must be [key, role, turn, value], got {entry!r}"
                )
            key, role, turn, value = entry if len(entry) == 4 else (entry[0], entry[1], 0, entry[2])
            loaded[(str(key), str(role), int(turn))] = float(value)
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
    A group of one sample has no other sample to compare with: advantage 0 (as in `grpo_advantages`)."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (N,), got shape {tuple(rewards.shape)}")
    values = rewards.detach().float() if not rewards.is_floating_point() else rewards.detach()
    index, num_groups = group_index(group_ids, values.numel())
    index = index.to(values.device)
    counts = values.new_zeros(num_groups).index_add_(0, index, torch.ones_like(values))[index]
    sums = values.new_zeros(num_groups).index_add_(0, index, values)[index]
    others = (sums - values) / (counts - 1).clamp(min=1)
    return torch.where(counts > 1, values - others, torch.zeros_like(values))


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


def whiten_by_group(
    values: Tensor, group_ids: GroupIds, mask: Tensor | None = None, eps: float = 1e-8, center: bool = True
) -> Tensor:
    """(x - mean) / (std + eps) over the masked entries (population std) within each group of rows; 0 where
    mask is False. values (N, ...), group_ids (N,), mask like values. Without `center`, x / (std + eps): the
    scale alone, so that an advantage of 0 (no signal) stays 0.

    Pass role names as group ids to whiten per role, or one id for the whole batch.
    """
    if mask is not None and mask.shape != values.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from values shape {tuple(values.shape)}")
    flat = values.detach().reshape(values.shape[0], -1)
    weights = torch.ones_like(flat) if mask is None else mask.reshape(flat.shape).to(flat.dtype)
    index, num_groups = group_index(group_ids, flat.shape[0])
    index = index.to(flat.device)
    means, stds = _group_mean_std(flat, weights, index, num_groups)
    centred = flat - means[index].unsqueeze(-1) if center else flat
    whitened = centred / (stds[index].unsqueeze(-1) + eps) * weights
    return whitened.view_as(values)
