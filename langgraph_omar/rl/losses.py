"""PPO losses: pure functions over (B, T) token tensors (docs/design.md §4).

Every loss is a token-level mean: the sum over real tokens (mask True) divided by the number of real tokens,
so a long turn weighs more than a short one unless per-token `weights` (role balancing, whose mean over
tokens is 1) say otherwise. A mask with no real token gives 0, not NaN. Metrics are detached 0-dim tensors
(no device sync here; the caller calls float() when it logs).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

KlKind = Literal["k1", "k2", "k3"]


def masked_sum(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of values where mask is True. values, mask: same shape; dim None sums everything."""
    _check_same_shape(values=values, mask=mask)
    masked = values * mask.to(values.dtype)
    return masked.sum() if dim is None else masked.sum(dim)


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of values where mask is True; 0 where no entry is True (not NaN)."""
    count = masked_sum(torch.ones_like(values), mask, dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1)


def ppo_clip_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float = 0.2,
    weights: Tensor | None = None,
    clip_eps_high: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped surrogate loss per token: max(-A r, -A clip(r, 1 - eps, 1 + eps_high)), r = exp(lp - old_lp).

    logprobs (B, T) carry gradients; old_logprobs (B, T) are the recorded sampling log-probabilities;
    advantages (B, T); mask (B, T) bool; weights (B, T) optional per-token weights. clip_eps_high defaults to
    clip_eps (give a larger one for DAPO's asymmetric clipping).
    Loss = sum(weights * per_token_loss * mask) / sum(mask).
    Metrics: clip_fraction (share of real tokens where the clipped term is the larger, i.e. the gradient is
    cut), approx_kl (k3 estimate of KL(old || new): mean of (r - 1) - log r), ratio_mean.
    """
    _check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    if weights is not None:
        _check_same_shape(logprobs=logprobs, weights=weights)
    if clip_eps <= 0 or (clip_eps_high is not None and clip_eps_high <= 0):
        raise ValueError(f"clip_eps and clip_eps_high must be > 0, got {clip_eps} and {clip_eps_high}")
    upper = clip_eps if clip_eps_high is None else clip_eps_high
    log_ratio = logprobs - old_logprobs.detach()
    ratio = torch.exp(log_ratio)
    advantages = advantages.detach()
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + upper)
    per_token = torch.maximum(unclipped, clipped)
    if weights is not None:
        per_token = per_token * weights.detach()
    loss = masked_mean(per_token, mask)
    with torch.no_grad():
        metrics = {
            "clip_fraction": masked_mean((clipped > unclipped).to(ratio.dtype), mask),
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return loss, {name: value.detach() for name, value in metrics.items()}


def value_loss(
    values: Tensor,
    returns: Tensor,
    old_values: Tensor | None,
    mask: Tensor,
    clip_eps: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """0.5 (V - R)^2 per token; with clip_eps, PPO's pessimistic clipped version:
    0.5 max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2). Masked token mean.

    values (B, T) carry gradients; returns (B, T) are the value targets; old_values (B, T) the values at
    rollout time (required when clip_eps is given, else may be None). Metrics: value_clip_fraction, explained_variance
    (1 - Var(R - V) / Var(R) over real tokens; 0 when Var(R) is 0 up to float rounding).
    """
    _check_same_shape(values=values, returns=returns, mask=mask)
    returns = returns.detach()
    losses = (values - returns) ** 2
    clip_fraction = values.new_zeros(())
    if clip_eps is not None:
        if old_values is None:
            raise ValueError("value_loss with clip_eps needs old_values")
        if clip_eps <= 0:
            raise ValueError(f"value clip_eps must be > 0, got {clip_eps}")
        _check_same_shape(values=values, old_values=old_values)
        old_values = old_values.detach()
        clipped_values = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
        clipped_losses = (clipped_values - returns) ** 2
        clip_fraction = masked_mean((clipped_losses > losses).to(values.dtype), mask).detach()
        losses = torch.maximum(losses, clipped_losses)
    loss = 0.5 * masked_mean(losses, mask)
    with torch.no_grad():
        returns_variance = _masked_variance(returns, mask)
        residual_variance = _masked_variance(returns - values, mask)
        # returns equal up to float rounding (A + V) have no variance to explain
        rounding = 1e-6 * masked_mean(returns**2, mask)
        explained = torch.where(
            returns_variance > rounding,
            1.0 - residual_variance / returns_variance,
            torch.zeros_like(returns_variance),
        )
    return loss, {"value_clip_fraction": clip_fraction, "explained_variance": explained.detach()}


def kl_per_token(logprobs: Tensor, ref_logprobs: Tensor, kind: KlKind = "k3") -> Tensor:
    """Per-token estimate of KL(policy || reference) on tokens sampled from the policy. (B, T) -> (B, T).

    With d = logprobs - ref_logprobs: k1 = d (unbiased, high variance, can be negative), k2 = d^2 / 2,
    k3 = exp(-d) - 1 + d (unbiased, always >= 0; Schulman's estimator).
    """
    _check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
    diff = logprobs - ref_logprobs.detach()
    if kind == "k1":
        return diff
    if kind == "k2":
        return 0.5 * diff**2
    if kind == "k3":
        return torch.exp(-diff) - 1.0 + diff
    raise ValueError(f"unknown KL estimator {kind!r}; expected 'k1', 'k2' or 'k3'")


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor, kind: KlKind = "k3") -> Tensor:
    """Masked token mean of `kl_per_token`: the KL term added to the loss (times its coefficient)."""
    return masked_mean(kl_per_token(logprobs, ref_logprobs, kind), mask)


def _masked_variance(values: Tensor, mask: Tensor) -> Tensor:
    mean = masked_mean(values, mask)
    return masked_mean((values - mean) ** 2, mask)


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
    if len(set(shapes.values())) > 1:
        described = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"shapes must match: {described}")
