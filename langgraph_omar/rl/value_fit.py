"""Fitting the critic's value head alone, before the policy moves (critic mode, docs/design.md §4).

A value head that starts at zero when PPO starts gives the first PPO iterations advantages that are raw
returns (no baseline), and value targets that its own zeros bootstrap. PPO implementations for language models
fit the critic first (OpenRLHF's `freezing_actor_steps`, value pre-training); here the head is fitted during the
warm start, to the Monte Carlo returns of each warm-start iteration's rollouts, on the body's hidden states with
the LoRA frozen: a regression on fixed features that moves no policy weight.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def explained_variance(predictions: Tensor, targets: Tensor) -> float:
    """1 - Var(targets - predictions) / Var(targets) over (M,) values (1: perfect, 0: no better than the
    targets' mean, < 0: worse); 0 when the targets do not vary (as the value loss's metric)."""
    variance = targets.float().var(unbiased=False)
    if not bool(variance > 0):
        return 0.0
    return float(1.0 - (targets.float() - predictions.float()).var(unbiased=False) / variance)


def fit_value_head(
    head: nn.Linear, features: Tensor, targets: Tensor, steps: int, learning_rate: float
) -> dict[str, float]:
    """Fit `head` (Linear(H, 1)) in place to `targets` by `steps` full-batch Adam steps on the mean squared
    error, starting from its current weights (so successive fits accumulate). features (M, H), targets (M,).

    Returns value_fit_loss_before/after and value_fit_explained_variance_before/after on these samples.
    """
    if features.dim() != 2 or targets.shape != features.shape[:1]:
        raise ValueError(
            f"features must be (M, H) and targets (M,), got {tuple(features.shape)} and {tuple(targets.shape)}"
        )
    weight = head.weight
    x = features.detach().to(weight.device, weight.dtype)
    y = targets.detach().to(weight.device, weight.dtype)

    def predict() -> Tensor:
        return head(x).squeeze(-1)

    with torch.no_grad():
        before = predict()
    optimizer = torch.optim.Adam(head.parameters(), lr=learning_rate)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(predict(), y)
            loss.backward()
            optimizer.step()
    head.zero_grad(set_to_none=True)
    with torch.no_grad():
        after = predict()
    return {
        "value_fit_loss_before": float(nn.functional.mse_loss(before, y)),
        "value_fit_loss_after": float(nn.functional.mse_loss(after, y)),
        "value_fit_explained_variance_before": explained_variance(before, y),
        "value_fit_explained_variance_after": explained_variance(after, y),
    }
