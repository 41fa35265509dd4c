from __future__ import annotations

import pytest
import torch

from langgraph_omar.rl.advantages import (
    EmaBaseline,
    discounted_returns,
    group_turn_advantages,
    grpo_advantages,
    hierarchical_gae,
    rloo_advantages,
    role_balance_token_weights,
    role_balance_weights,
    spread_turn_advantage,
    whiten_by_group,
)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# --- hierarchical GAE ------------------------------------------------------------------------------------


def test_hierarchical_gae_hand_computed() -> None:
    # K=2 turns: turn 1 has token values [0.5, 1.0], turn 2 has [2.0]; rewards r = [0, 1].
    # gamma_turn=0.9, lam_turn=0.95, gamma_tok=0.8, lam_tok=0.5.
    # Turn level: V_1 = 1.0, V_2 = 2.0, V_3 = 0.
    #   delta_2 = 1 + 0.9*0 - 2 = -1                 -> A_2 = -1
    #   delta_1 = 0 + 0.9*2 - 1 = 0.8                -> A_1 = 0.8 + 0.9*0.95*(-1) = -0.055
    # Token level, turn 1: r' = [0, A_1 + V_1 = 0.945], V_3' = 0.
    #   t=2: delta = 0.945 + 0 - 1.0 = -0.055        -> A = -0.055
    #   t=1: delta = 0 + 0.8*1.0 - 0.5 = 0.3         -> A = 0.3 + 0.8*0.5*(-0.055) = 0.278
    #   returns = A + V = [0.778, 0.945]
    # Token level, turn 2: r' = [A_2 + V_2 = 1.0]: delta = 1 - 2 = -1 -> A = -1, return = 1.0
    turn_adv, token_adv, token_ret = hierarchical_gae([t(0.5, 1.0), t(2.0)], t(0.0, 1.0), 0.9, 0.95, 0.8, 0.5)
    torch.testing.assert_close(turn_adv, t(-0.055, -1.0))
    torch.testing.assert_close(token_adv[0], t(0.278, -0.055))
    torch.testing.assert_close(token_adv[1], t(-1.0))
    torch.testing.assert_close(token_ret[0], t(0.778, 0.945))
    torch.testing.assert_close(token_ret[1], t(1.0))


def test_last_token_advantage_equals_turn_advantage_on_random_inputs() -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        num_turns = int(torch.randint(1, 6, (1,), generator=generator))
        values = [
            torch.randn(int(torch.randint(1, 8, (1,), generator=generator)), generator=generator)
            for _ in range(num_turns)
        ]
        rewards = torch.randn(num_turns, generator=generator)
        turn_adv, token_adv, token_ret = hierarchical_gae(values, rewards, 0.97, 0.9, 0.99, 0.95)
        for k in range(num_turns):
            torch.testing.assert_close(token_adv[k][-1], turn_adv[k])
            torch.testing.assert_close(token_ret[k], token_adv[k] + values[k])


def test_gamma_lambda_one_turn_advantage_is_return_minus_value() -> None:
    # With gamma = lambda = 1 the GAE telescopes: A_k = sum_{j>=k} r_j - V_k.
    # V = [1, 2, 3] (last token of each turn), r = [1, 0, 5]: A = [6-1, 5-2, 5-3] = [5, 3, 2].
    values = [t(9.0, 1.0), t(2.0), t(-4.0, 0.0, 3.0)]
    turn_adv, _, _ = hierarchical_gae(values, t(1.0, 0.0, 5.0), 1.0, 1.0, 1.0, 1.0)
    torch.testing.assert_close(turn_adv, t(5.0, 3.0, 2.0))


def test_hierarchical_gae_rejects_empty_turn_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"token_values\[1\] must be a non-empty"):
        hierarchical_gae([t(1.0), t()], t(0.0, 1.0), 1.0, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="turn_rewards must have shape"):
        hierarchical_gae([t(1.0)], t(0.0, 1.0), 1.0, 1.0, 1.0, 1.0)
    turn_adv, token_adv, token_ret = hierarchical_gae([], t(), 1.0, 1.0, 1.0, 1.0)
    assert turn_adv.shape == (0,) and token_adv == [] and token_ret == []


def test_outputs_carry_no_autograd_history() -> None:
    values = [torch.tensor([0.5, 1.0], requires_grad=True)]
    turn_adv, token_adv, token_ret = hierarchical_gae(values, torch.tensor([1.0]), 0.9, 0.9, 0.9, 0.9)
    assert not turn_adv.requires_grad and not token_adv[0].requires_grad and not token_ret[0].requires_grad


# --- critic-free -----------------------------------------------------------------------------------------


def test_discounted_returns() -> None:
    # r = [1, 0, 2], gamma = 0.5: G_3 = 2, G_2 = 0 + 0.5*2 = 1, G_1 = 1 + 0.5*1 = 1.5
    torch.testing.assert_close(discounted_returns(t(1.0, 0.0, 2.0), 0.5), t(1.5, 1.0, 2.0))


def test_group_turn_advantages_compare_each_turn_position_with_itself() -> None:
    # Episode 1: G = [5]; episode 2: G = [1, 2]. Turn 1: {5, 1}: mean 3 -> [2], [-2] (population std 2: scaled
    # [1], [-1]). Turn 2: episode 2 alone: no baseline in the group -> 0, and `shared` says so.
    advantages, shared = group_turn_advantages([t(5.0), t(1.0, 2.0)], eps=0.0)
    torch.testing.assert_close(advantages[0], t(2.0))
    torch.testing.assert_close(advantages[1], t(-2.0, 0.0))
    assert shared[0].tolist() == [True] and shared[1].tolist() == [True, False]
    scaled, _ = group_turn_advantages([t(5.0), t(1.0, 2.0)], eps=0.0, scale=True)
    torch.testing.assert_close(scaled[0], t(1.0))
    torch.testing.assert_close(scaled[1], t(-1.0, 0.0))


def test_spread_turn_advantage() -> None:
    # A = 2, L = 3, gamma = 0.5: token t gets 2 * 0.5^(2-t) = [0.5, 1, 2]
    torch.testing.assert_close(spread_turn_advantage(2.0, 3, 0.5), torch.tensor([0.5, 1.0, 2.0]))
    torch.testing.assert_close(spread_turn_advantage(-1.0, 2), torch.tensor([-1.0, -1.0]))
    assert spread_turn_advantage(1.0, 0).shape == (0,)


def test_ema_baseline_sequence_and_roles_are_independent() -> None:
    # decay 0.95, b0 = 0. R=1: A = 1 - 0 = 1, b = 0.05. R=1: A = 1 - 0.05 = 0.95, b = 0.0975.
    # R=0: A = -0.0975, b = 0.95*0.0975 = 0.092625.
    ema = EmaBaseline()
    assert ema.advantage("g", "seller", 1.0) == pytest.approx(1.0)
    assert ema.advantage("g", "seller", 1.0) == pytest.approx(0.95)
    assert ema.advantage("g", "seller", 0.0) == pytest.approx(-0.0975)
    assert ema.baseline("g", "seller") == pytest.approx(0.092625)
    assert ema.advantage("g", "buyer", 2.0) == pytest.approx(2.0)  # own baseline, still 0
    assert ema.advantage("h", "seller", 2.0) == pytest.approx(2.0)  # other game, own baseline


def test_ema_baseline_turn_positions_and_state_dict_roundtrip() -> None:
    ema = EmaBaseline(decay=0.5)
    # Same key/role/turn twice: R=2 reads b=0 -> A=2, b=1; R=4 reads b=1 -> A=3, b=2.5. Turn 1 has its own.
    assert [ema.advantage("g", "a", 2.0), ema.advantage("g", "a", 4.0)] == [2.0, 3.0]
    assert ema.advantage("g", "a", 6.0, turn=1) == 6.0 and ema.baseline("g", "a", turn=1) == 3.0
    restored = EmaBaseline()
    restored.load_state_dict(ema.state_dict())
    assert restored.decay == 0.5 and restored.baseline("g", "a") == pytest.approx(2.5)
    assert restored.baseline("g", "a", turn=1) == pytest.approx(3.0)
    # a state saved before baselines had turn positions: [key, role, value] is turn 0's
    restored.load_state_dict({"decay": 0.9, "initial_value": 0.0, "baselines": [["g", "b", 0.5]]})
    assert restored.baseline("g", "b") == 0.5 and restored.baseline("g", "b", turn=1) == 0.0
    with pytest.raises(ValueError, match="missing key 'baselines'"):
        restored.load_state_dict({"decay": 0.9, "initial_value": 0.0})
    with pytest.raises(ValueError, match=r"baselines\[0\] must be"):
        restored.load_state_dict({"decay": 0.9, "initial_value": 0.0, "baselines": [["g", 1.0]]})
    with pytest.raises(ValueError, match="decay must be in"):
        EmaBaseline(decay=1.0)


# --- episode level ---------------------------------------------------------------------------------------


def test_grpo_hand_case() -> None:
    # Group a: [1, 3] mean 2 std 1 -> [-1, 1]; group b: [2, 6] mean 4 std 2 -> [-1, 1].
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0])
    groups = ["a", "b", "a", "b"]
    torch.testing.assert_close(
        grpo_advantages(rewards, groups, eps=0.0), torch.tensor([-1.0, -1.0, 1.0, 1.0])
    )
    torch.testing.assert_close(
        grpo_advantages(rewards, groups, scale=False), torch.tensor([-1.0, -2.0, 1.0, 2.0])
    )
    torch.testing.assert_close(
        grpo_advantages(rewards, torch.tensor([0, 1, 0, 1]), eps=0.0), torch.tensor([-1.0, -1.0, 1.0, 1.0])
    )
    assert grpo_advantages(torch.tensor([5.0]), ["solo"]).item() == 0.0


def test_rloo_hand_case() -> None:
    # Group x: [1, 3, 5]: 1 - mean(3,5) = -3, 3 - mean(1,5) = 0, 5 - mean(1,3) = 3. Group y: [2, 4]: -2, 2.
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    out = rloo_advantages(rewards, ["x", "y", "x", "y", "x"])
    torch.testing.assert_close(out, torch.tensor([-3.0, -2.0, 0.0, 2.0, 3.0]))
    # a group of one sample has no other sample to compare with: 0, as in GRPO
    torch.testing.assert_close(
        rloo_advantages(torch.tensor([1.0, 2.0, 3.0]), ["x", "x", "y"]), torch.tensor([-1.0, 1.0, 0.0])
    )


# --- role balance and whitening --------------------------------------------------------------------------


def test_role_balance_equal_total_weight_per_role() -> None:
    # N = 40 tokens, 2 roles: w_a = 40/(2*30) = 2/3, w_b = 40/(2*10) = 2; totals 20 and 20; mean weight 1.
    weights = role_balance_weights({"a": 30, "b": 10, "idle": 0})
    assert (
        weights["a"] == pytest.approx(2 / 3) and weights["b"] == pytest.approx(2.0) and weights["idle"] == 0.0
    )
    assert weights["a"] * 30 == pytest.approx(weights["b"] * 10)


def test_role_balance_inverse_win_rate() -> None:
    # Shares proportional to 1/0.75 = 4/3 and 1/0.25 = 4 -> 0.25 and 0.75 of N = 40.
    # w_a = 40*0.25/30 = 1/3 (total 10), w_b = 40*0.75/10 = 3 (total 30).
    weights = role_balance_weights({"a": 30, "b": 10}, {"a": 0.75, "b": 0.25}, inverse_win_rate=True)
    assert weights["a"] == pytest.approx(1 / 3) and weights["b"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match="needs win_rates"):
        role_balance_weights({"a": 1}, inverse_win_rate=True)
    with pytest.raises(ValueError, match="must be in"):
        role_balance_weights({"a": 1}, {"a": 1.5}, inverse_win_rate=True)


def test_role_balance_token_weights_layout() -> None:
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    weights = role_balance_token_weights(["a", "b", "a"], mask)
    # a has 7 tokens, b has 1: w_a = 8/(2*7), w_b = 8/2 = 4. Each role's total is 4; mean over tokens is 1.
    assert weights[1, 0].item() == pytest.approx(4.0)
    assert weights[0].sum().item() + weights[2].sum().item() == pytest.approx(4.0)
    assert weights[mask].mean().item() == pytest.approx(1.0) and torch.all(weights[~mask] == 0)


def test_whiten_by_group_with_mask() -> None:
    # Masked entries [1, 3]: mean 2, std 1 -> [-1, 1]; the masked-out 100 becomes 0.
    out = whiten_by_group(
        torch.tensor([[1.0, 100.0, 3.0]]), ["all"], torch.tensor([[True, False, True]]), eps=0.0
    )
    torch.testing.assert_close(out, torch.tensor([[-1.0, 0.0, 1.0]]))


def test_whiten_by_group_per_role() -> None:
    # Role a rows [[1, 3]] -> [-1, 1]; role b rows [[10], [30]] (one token each) -> mean 20 std 10 -> -1, 1.
    values = torch.tensor([[1.0, 3.0], [10.0, 0.0], [30.0, 0.0]])
    mask = torch.tensor([[True, True], [True, False], [True, False]])
    out = whiten_by_group(values, ["a", "b", "b"], mask, eps=0.0)
    torch.testing.assert_close(out, torch.tensor([[-1.0, 1.0], [-1.0, 0.0], [1.0, 0.0]]))


def test_whiten_by_group_without_centring_divides_by_the_std_and_keeps_zeros() -> None:
    # Masked entries [0, 2, -2, 0]: mean 0, std sqrt(2) -> each divided by sqrt(2); the zeros stay 0.
    values = torch.tensor([[0.0, 2.0], [-2.0, 0.0]])
    out = whiten_by_group(values, ["a", "a"], eps=0.0, center=False)
    torch.testing.assert_close(out, values / 2.0**0.5)
    # [1, 3]: std 1, not centred -> unchanged
    torch.testing.assert_close(
        whiten_by_group(torch.tensor([[1.0, 3.0]]), ["a"], eps=0.0, center=False), torch.tensor([[1.0, 3.0]])
    )
