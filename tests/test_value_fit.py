"""Fitting the critic's value head alone before PPO (rl/value_fit.py, PPOTrainer.fit_value_head)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from langgraph_omar.rl.value_fit import explained_variance, fit_value_head


def test_explained_variance_by_hand():
    targets = torch.tensor([1.0, 2.0, 3.0, 4.0])  # variance 1.25
    assert explained_variance(targets, targets) == pytest.approx(1.0)
    assert explained_variance(torch.full((4,), 2.5), targets) == pytest.approx(0.0)
    # residuals [1, 0, 0, -1]: variance 0.5 -> 1 - 0.5 / 1.25
    assert explained_variance(torch.tensor([0.0, 2.0, 3.0, 5.0]), targets) == pytest.approx(0.6)
    assert explained_variance(torch.zeros(3), torch.ones(3)) == 0.0  # nothing to explain


def zero_head(width: int) -> nn.Linear:
    head = nn.Linear(width, 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


def test_fit_value_head_fits_a_linear_target_judged_on_held_out_samples():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(256, 8, generator=generator) * 10 + 3  # scale and offset of a real model's states
    targets = features @ torch.linspace(-1, 1, 8) + 0.5
    held_out = torch.arange(256) % 4 == 3
    head = zero_head(8)
    metrics = fit_value_head(head, features, targets, held_out)
    assert metrics["value_fit_explained_variance_held_out_before"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["value_fit_explained_variance_held_out_after"] > 0.99
    assert metrics["value_fit_strength"] > 0
    with torch.no_grad():
        assert head(features).squeeze(-1).tolist() == pytest.approx(targets.tolist(), abs=0.05)
    with pytest.raises(ValueError, match="features must be"):
        fit_value_head(head, features, targets[:10], held_out)


def test_a_fit_that_only_learns_noise_leaves_the_weights_nearly_as_they_were():
    # targets unrelated to the features: a head fitted to the training samples predicts noise on the held-out
    # ones, so the weights stay nearly as they were (a strong ridge); the bias learns the targets' mean
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(64, 32, generator=generator)
    targets = torch.randn(64, generator=generator) + 2.0
    held_out = torch.arange(64) % 4 == 3
    head = zero_head(32)
    metrics = fit_value_head(head, features, targets, held_out)
    assert metrics["value_fit_explained_variance_held_out_after"] < 0.1
    assert head.weight.norm() < 0.1 * float(targets.std()) / float(features.std())
    assert float(head.bias) == pytest.approx(float(targets[~held_out].mean()), abs=0.2)


def test_the_fit_starts_from_the_current_weights():
    # the current head already explains the targets: the fit keeps it (a ridge toward it changes nothing)
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(128, 8, generator=generator)
    head = nn.Linear(8, 1)
    with torch.no_grad():
        targets = head(features).squeeze(-1)
    weight = head.weight.detach().clone()
    metrics = fit_value_head(head, features, targets, torch.arange(128) % 4 == 3)
    assert metrics["value_fit_explained_variance_held_out_after"] == pytest.approx(1.0)
    assert torch.allclose(head.weight, weight, atol=1e-5)


def test_a_head_that_no_longer_fits_its_features_is_never_kept_over_a_constant():
    # the current head predicts noise (its features moved on) and the targets are noise too: a ridge toward
    # the head keeps its noise, a weak one fits the training noise; a constant is better on held-out samples
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(64, 32, generator=generator)
    targets = torch.randn(64, generator=generator)
    head = nn.Linear(32, 1)
    with torch.no_grad():
        head.weight.copy_(torch.randn(1, 32, generator=generator) * 100)
    metrics = fit_value_head(head, features, targets, torch.arange(64) % 4 == 3)
    assert metrics["value_fit_explained_variance_held_out_before"] < -100
    assert metrics["value_fit_explained_variance_held_out_after"] >= 0.0
    assert head.weight.norm() < 1.0
