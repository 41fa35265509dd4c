from __future__ import annotations

import math

import pytest
import torch

from langgraph_omar.rl.losses import (
    kl_penalty,
    kl_per_token,
    masked_mean,
    masked_sum,
    ppo_clip_loss,
    value_loss,
)


def test_masked_sum_and_mean() -> None:
    values = torch.tensor([[1.0, 2.0, 100.0], [3.0, 100.0, 100.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert masked_sum(values, mask).item() == 6.0
    assert masked_mean(values, mask).item() == 2.0
    torch.testing.assert_close(masked_mean(values, mask, dim=1), torch.tensor([1.5, 3.0]))
    assert masked_mean(values, torch.zeros_like(mask)).item() == 0.0  # no real token: 0, not NaN
    with pytest.raises(ValueError, match="shapes must match"):
        masked_mean(values, mask[:, :2])


def _ppo_case() -> tuple[torch.Tensor, ...]:
    ratios = torch.tensor([[1.5, 0.5, 1.0, 1.1, 1.5, 0.5, 3.0]])
    advantages = torch.tensor([[1.0, -1.0, 2.0, -1.0, -1.0, 1.0, 50.0]])
    mask = torch.tensor([[True, True, True, True, True, True, False]])
    old_logprobs = torch.tensor([[-1.0, -2.0, -0.5, -3.0, -1.5, -0.7, -1.0]])
    logprobs = (old_logprobs + ratios.log()).requires_grad_(True)
    return logprobs, old_logprobs, advantages, mask, ratios


def test_ppo_clip_hand_case_clips_both_sides() -> None:
    # clip_eps = 0.2, per-token loss max(-A r, -A clip(r, 0.8, 1.2)):
    #   r=1.5, A=+1: max(-1.5, -1.2) = -1.2   clipped above (gradient cut)
    #   r=0.5, A=-1: max( 0.5,  0.8) =  0.8   clipped below (gradient cut)
    #   r=1.0, A=+2: max(-2.0, -2.0) = -2.0
    #   r=1.1, A=-1: max( 1.1,  1.1) =  1.1   inside the range
    #   r=1.5, A=-1: max( 1.5,  1.2) =  1.5   outside the range, but the pessimistic unclipped term wins
    #   r=0.5, A=+1: max(-0.5, -0.8) = -0.5   same, below
    #   7th token masked out.
    # loss = (-1.2 + 0.8 - 2.0 + 1.1 + 1.5 - 0.5) / 6 = -0.3 / 6 = -0.05; clip_fraction = 2/6.
    logprobs, old_logprobs, advantages, mask, ratios = _ppo_case()
    loss, metrics = ppo_clip_loss(logprobs, old_logprobs, advantages, mask, clip_eps=0.2)
    assert loss.item() == pytest.approx(-0.05, abs=1e-6)
    assert metrics["clip_fraction"].item() == pytest.approx(2 / 6)
    assert metrics["ratio_mean"].item() == pytest.approx((1.5 + 0.5 + 1.0 + 1.1 + 1.5 + 0.5) / 6, abs=1e-6)
    kl = [(r - 1) - math.log(r) for r in (1.5, 0.5, 1.0, 1.1, 1.5, 0.5)]
    assert metrics["approx_kl"].item() == pytest.approx(sum(kl) / 6, abs=1e-6)
    loss.backward()
    assert logprobs.grad is not None
    # Gradient of -A r w.r.t. the logprob is -A r / 6 where unclipped, 0 where clipped or masked:
    expected = torch.tensor([[0.0, 0.0, -2.0 * 1.0, 1.1, 1.5, -0.5, 0.0]]) / 6
    torch.testing.assert_close(logprobs.grad, expected)


def test_ppo_clip_weights_and_asymmetric_clip() -> None:
    logprobs, old_logprobs, advantages, mask, _ = _ppo_case()
    weights = torch.tensor([[2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    # Only token 1 counts, weight 2: with clip_eps_high = 0.6, r = 1.5 is inside [0.8, 1.6]: loss = 2 * -1.5 / 6.
    loss, _ = ppo_clip_loss(logprobs, old_logprobs, advantages, mask, 0.2, weights, clip_eps_high=0.6)
    assert loss.item() == pytest.approx(-0.5, abs=1e-6)
    with pytest.raises(ValueError, match="clip_eps"):
        ppo_clip_loss(logprobs, old_logprobs, advantages, mask, clip_eps=0.0)


def test_value_loss_unclipped_and_clipped() -> None:
    values = torch.tensor([[1.0, 3.0, 0.0]], requires_grad=True)
    returns = torch.tensor([[2.0, 0.0, 9.0]])
    old_values = torch.tensor([[0.0, 2.9, 0.0]])
    mask = torch.tensor([[True, True, False]])
    # Unclipped: 0.5 * ((1-2)^2 + (3-0)^2) / 2 = 0.5 * 10 / 2 = 2.5
    loss, _ = value_loss(values, returns, None, mask)
    assert loss.item() == pytest.approx(2.5)
    # clip 0.5: token 1: V_clip = 0 + clip(1, -.5, .5) = 0.5 -> (0.5-2)^2 = 2.25 > 1 -> 2.25 (clipped wins)
    #           token 2: V_clip = 2.9 + 0.1 = 3.0 -> 9 = 9, unclipped kept. loss = 0.5 * (2.25 + 9) / 2 = 2.8125
    loss, metrics = value_loss(values, returns, old_values, mask, clip_eps=0.5)
    assert loss.item() == pytest.approx(2.8125)
    assert metrics["value_clip_fraction"].item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="needs old_values"):
        value_loss(values, returns, None, mask, clip_eps=0.5)


def test_explained_variance() -> None:
    # Perfect values explain everything: 1 - 0 / Var(R) = 1.
    returns = torch.tensor([[1.0, 2.0, 3.0]])
    mask = torch.ones_like(returns, dtype=torch.bool)
    _, metrics = value_loss(returns.clone(), returns, None, mask)
    assert metrics["explained_variance"].item() == pytest.approx(1.0)
    # Returns equal up to float rounding (GAE's A + V) have no variance to explain: 0, not -1e14.
    returns = torch.tensor([[1.0, 1.0 + 1e-7, 1.0 - 1e-7]])
    _, metrics = value_loss(torch.tensor([[0.0, 1.0, 2.0]]), returns, None, mask)
    assert metrics["explained_variance"].item() == 0.0


def test_kl_estimators() -> None:
    # d = logprobs - ref = [log 2, 0]: k1 = [log 2, 0]; k2 = [(log 2)^2 / 2, 0]; k3 = [1/2 - 1 + log 2, 0].
    logprobs = torch.tensor([[math.log(2.0), -1.0]])
    ref = torch.tensor([[0.0, -1.0]])
    log2 = math.log(2.0)
    torch.testing.assert_close(kl_per_token(logprobs, ref, "k1"), torch.tensor([[log2, 0.0]]))
    torch.testing.assert_close(kl_per_token(logprobs, ref, "k2"), torch.tensor([[log2**2 / 2, 0.0]]))
    torch.testing.assert_close(kl_per_token(logprobs, ref, "k3"), torch.tensor([[0.5 - 1 + log2, 0.0]]))
    mask = torch.tensor([[True, True]])
    assert kl_penalty(logprobs, ref, mask).item() == pytest.approx((0.5 - 1 + log2) / 2)
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl_per_token(logprobs, ref, "k4")  # type: ignore[arg-type]


def test_k3_is_unbiased_for_sampled_tokens() -> None:
    # Sampling from p, E[k3] = KL(p || q) exactly: check with the expectation taken over the whole support.
    p = torch.tensor([0.7, 0.2, 0.1])
    q = torch.tensor([0.2, 0.5, 0.3])
    exact = (p * (p / q).log()).sum()
    estimate = (p * kl_per_token(p.log().unsqueeze(0), q.log().unsqueeze(0), "k3")[0]).sum()
    torch.testing.assert_close(estimate, exact)
