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


def test_fit_value_head_fits_a_linear_target_from_zero_and_reports_it():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(256, 8, generator=generator)
    targets = features @ torch.linspace(-1, 1, 8) + 0.5
    head = nn.Linear(8, 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    metrics = fit_value_head(head, features, targets, steps=300, learning_rate=0.05)
    assert metrics["value_fit_explained_variance_before"] == pytest.approx(0.0, abs=1e-6)  # a zero head
    assert metrics["value_fit_explained_variance_after"] > 0.99
    assert metrics["value_fit_loss_after"] < 0.01 * metrics["value_fit_loss_before"]
    assert head.weight.grad is None  # no gradient left behind for the trainer's own optimizer
    with pytest.raises(ValueError, match="features must be"):
        fit_value_head(head, features, targets[:10], steps=1, learning_rate=0.05)
