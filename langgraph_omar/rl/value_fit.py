"""Fitting the critic's value head alone, before the policy moves (critic mode, docs/design.md §4).

A value head that starts at zero when PPO starts gives the first PPO iterations advantages that are raw
returns (no baseline), and value targets that its own zeros bootstrap. PPO implementations for language models
fit the critic first (OpenRLHF's `freezing_actor_steps`, value pre-training); here the head is fitted during the
warm start, to the Monte Carlo returns of each warm-start iteration's rollouts, on the body's hidden states with
the LoRA frozen: a ridge regression on fixed features that moves no policy weight, its strength chosen on
held-out episodes.
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


RIDGE_STRENGTHS = tuple(10.0**k for k in range(-4, 4))  # relative to the mean feature variance


def fit_value_head(head: nn.Linear, features: Tensor, targets: Tensor, held_out: Tensor) -> dict[str, float]:
    """Fit `head` (Linear(H, 1)) in place to `targets` by ridge regression on the samples not `held_out`, with
    the prior and strength the held-out samples choose; never worse on them than a constant. features (M, H), targets (M,),
    held_out (M,) bool.

    For each prior p (the current weights w0, and 0) and strength s in `RIDGE_STRENGTHS`:
    w = p + argmin_d |X_c d - r_c|^2 / n + s tr(C) / H |d|^2 (r: the residuals of p, _c: centred on the training
    samples, C: their feature covariance), and the constant (w = 0); each with the bias that makes the mean
    training residual 0. Kept: the candidate with the least residual variance Var(target - value) on the
    held-out samples, against the current weights with only the bias refitted (a constant offset does not
    change advantages, which are whitened; noise in the values does). A few episodes' tokens are highly
    correlated, so a head fitted to them alone can predict noise: then the weights stay as they were.
    Returns value_fit_strength (0: the current weights kept; -1: the constant),
    value_fit_explained_variance_held_out_before/after and value_fit_explained_variance_train_after.
    """
    if features.dim() != 2 or targets.shape != features.shape[:1] or held_out.shape != targets.shape:
        raise ValueError(
            f"features must be (M, H), targets and held_out (M,), got {tuple(features.shape)}, "
            f"{tuple(targets.shape)} and {tuple(held_out.shape)}"
        )
    x = features.detach().double()
    y = targets.detach().to(x.device).double()
    test = held_out.to(x.device)
    train = ~test
    w0 = head.weight.detach()[0].to(x.device).double()
    b0 = float(head.bias.detach()[0])

    def held_out_ev(w: Tensor, b: float) -> float:
        return explained_variance(x[test] @ w + b, y[test])

    before = held_out_ev(w0, b0)
    if not bool(train.any()):
        return {"value_fit_strength": 0.0, "value_fit_explained_variance_held_out_before": before}
    mean_x = x[train].mean(0)
    centred = x[train] - mean_x
    n, width = centred.shape
    covariance = centred.T @ centred / n
    scale = float(covariance.diagonal().mean().clamp(min=1e-12))
    eye = torch.eye(width, dtype=x.dtype, device=x.device)
    # the current weights with the bias refitted, then ridge fits toward them and toward zero (a head that
    # the features have moved away from is no prior); the constant (zero weights) is the zero-prior limit
    best_w = w0
    best_b = float((y[train] - x[train] @ w0).mean())
    best_ev, best_strength = held_out_ev(best_w, best_b), 0.0
    for prior in (w0, torch.zeros_like(w0)):
        residual = y[train] - x[train] @ prior
        rhs = centred.T @ (residual - residual.mean()) / n
        candidates = [(-1.0, torch.zeros_like(w0))] if not bool(prior.any()) else []
        for strength in RIDGE_STRENGTHS:
            candidates.append((strength, torch.linalg.solve(covariance + strength * scale * eye, rhs)))
        for strength, delta in candidates:
            w = prior + delta
            b = float((y[train] - x[train] @ w).mean())
            ev = held_out_ev(w, b)
            if ev > best_ev:
                best_w, best_b, best_strength, best_ev = w, b, strength, ev
    with torch.no_grad():
        head.weight.copy_(best_w.to(head.weight)[None])
        head.bias.fill_(best_b)
    return {
        "value_fit_strength": best_strength,
        "value_fit_explained_variance_held_out_before": before,
        "value_fit_explained_variance_held_out_after": best_ev,
        "value_fit_explained_variance_train_after": explained_variance(x[train] @ best_w + best_b, y[train]),
    }
