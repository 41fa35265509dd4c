"""Episodes -> training batch: token alignment, advantages by mode (hand-computed), weights, BC filter."""

from __future__ import annotations

import math

import pytest
import torch

from langgraph_omar.rl.advantages import EmaBaseline
from langgraph_omar.rl.batch import (
    assign_critic_advantages,
    build_batch,
    collect_samples,
    critic_free_turn_advantages,
    filtered_bc_rows,
    pad_samples,
)
from langgraph_omar.rl.config import AdvantageSettings, FilterSettings
from langgraph_omar.trajectory import Episode, Turn

PAD = 0


def turn(role: str, completion: list[int], prompt: list[int] | None = None, **kw) -> Turn:
    return Turn(
        role=role,
        node=role,
        text="x" * len(completion),
        prompt_ids=prompt or [9, 9],
        completion_ids=completion,
        logprobs=[-0.5] * len(completion),
        **kw,
    )


def episode(
    eid: str, turns: list[Turn], rewards: dict[str, float], group: str | None = None, **meta
) -> Episode:
    metadata = dict(meta)
    if group is not None:
        metadata["group_id"] = group
    return Episode(episode_id=eid, turns=turns, rewards=rewards, metadata=metadata)


def test_rows_are_prompt_plus_completion_ids_with_aligned_logprobs_and_mask():
    ep = episode(
        "e",
        [
            Turn("a", "a", "t", [5, 6], [7, 8], [-0.1, -0.2], temperature=0.7),
            Turn("b", "b", "t", [1], [2], [-0.3], temperature=0.0),  # greedy: recorded with T = 1
        ],
        {"a": 1.0, "b": 0.0},
    )
    samples, _ = collect_samples([ep])
    batch = pad_samples(samples, PAD)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8], [1, 2, PAD, PAD]]
    assert batch.completion_mask.tolist() == [[False, False, True, True], [False, True, False, False]]
    assert batch.old_logprobs[0, 2:].tolist() == pytest.approx([-0.1, -0.2])
    assert batch.old_logprobs[1, 1].item() == pytest.approx(-0.3)
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch.temperatures.tolist() == pytest.approx([0.7, 1.0])
    part = batch.select([1])
    assert part.input_ids.tolist() == [[1, 2]]  # trimmed to the row's length


def test_failed_episodes_unrewarded_roles_other_seats_and_other_sources_are_not_trained():
    hosted = Turn("a", "a", "a hosted model's reply", [], [], [], source="model", adapter="policy")
    ok = episode("ok", [turn("a", [1]), turn("judge", [2]), hosted], {"a": 1.0})
    failed = episode("bad", [turn("a", [1])], {"a": 1.0})
    failed.status = "failed"
    against_base = episode("vs", [turn("a", [1]), turn("b", [2])], {"a": 1.0, "b": 0.0})
    for e in (ok, failed, against_base):
        for t in e.turns:
            t.adapter = "policy"
    against_base.turns[1].adapter = None  # recorded as the base model's turn
    samples, counts = collect_samples([ok, failed, against_base], trained_adapter="policy")
    assert [(s.episode_index, s.role) for s in samples] == [(0, "a"), (2, "a")]
    assert counts == {
        "failed_episodes": 1,
        "unrewarded_turns": 1,
        "other_seat_turns": 1,
        "other_source_turns": 1,  # the hosted model's turn: no recorded ids, never PPO data
    }


def test_hierarchical_group_baseline_pools_every_turn_of_the_role_in_the_group():
    # Episode 1: role a has 2 turns, reward 1 -> G = [1, 1] (gamma 1). Episode 2: 1 turn, reward 0 -> G = [0].
    # Pooled [1, 1, 0]: mean 2/3, population std sqrt((1/9 + 1/9 + 4/9) / 3) = sqrt(2/9) = 0.4714.
    # A = (1 - 2/3) / 0.4714 = 0.7071 for episode 1's turns, (0 - 2/3) / 0.4714 = -1.4142 for episode 2's.
    eps = [
        episode("1", [turn("a", [1]), turn("a", [2])], {"a": 1.0}, group="g"),
        episode("2", [turn("a", [3])], {"a": 0.0}, group="g"),
    ]
    samples, _ = collect_samples(eps)
    adv = critic_free_turn_advantages(eps, samples, AdvantageSettings(mode="hierarchical"), EmaBaseline())
    assert adv.tolist() == pytest.approx([1 / math.sqrt(2), 1 / math.sqrt(2), -math.sqrt(2)], abs=1e-5)


def test_groups_of_one_episode_use_the_roles_ema_baseline_read_before_its_update():
    # Two single-episode groups, same game: the first reads b = 0 -> A = 1; b becomes 0.05 * 1 = 0.05;
    # the second reads 0.05 -> A = 1 - 0.05 = 0.95. Same for rae (episode level).
    for mode in ("hierarchical", "rae"):
        eps = [
            episode(str(i), [turn("a", [1])], {"a": 1.0}, group=f"g{i}", baseline_key="game")
            for i in range(2)
        ]
        samples, _ = collect_samples(eps)
        ema = EmaBaseline(decay=0.95)
        adv = critic_free_turn_advantages(eps, samples, AdvantageSettings(mode=mode), ema)
        assert adv.tolist() == pytest.approx([1.0, 0.95])
        assert ema.baseline("game", "a") == pytest.approx(0.05 * 1 + 0.95 * 0.05)


def test_grpo_normalises_each_roles_episode_return_within_its_group_and_degenerate_turns_get_zero():
    # Group rewards for role a: 1 and 0 -> mean 0.5, std 0.5 -> A = +-1 (up to eps); every turn of the role
    # gets its episode's value, except the degenerate one.
    eps = [
        episode("1", [turn("a", [1]), turn("a", [2], degenerate="empty")], {"a": 1.0}, group="g"),
        episode("2", [turn("a", [3])], {"a": 0.0}, group="g"),
    ]
    samples, _ = collect_samples(eps)
    adv = critic_free_turn_advantages(eps, samples, AdvantageSettings(mode="grpo"), EmaBaseline())
    assert adv.tolist() == pytest.approx([1.0, 0.0, -1.0], abs=1e-5)


def test_batch_spreads_turn_advantages_and_balances_roles():
    # Role a: 2 tokens, role b: 6 tokens, N = 8 -> w_a = 8 * (1/2) / 2 = 2, w_b = 8 * (1/2) / 6 = 2/3.
    # gamma_token 0.5: role a's turn advantage A spreads as [0.5 A, A].
    eps = [
        episode("1", [turn("a", [1, 2]), turn("b", [1, 2, 3, 4, 5, 6])], {"a": 1.0, "b": 0.0}, group="g"),
        episode("2", [turn("a", [1, 2]), turn("b", [1, 2, 3, 4, 5, 6])], {"a": 0.0, "b": 1.0}, group="g"),
    ]
    batch = build_batch(eps, AdvantageSettings(mode="grpo", gamma_token=0.5), EmaBaseline(), PAD)
    assert batch is not None
    assert batch.weights[0, 2:4].tolist() == pytest.approx([2.0, 2.0])
    assert batch.weights[1, 2:8].tolist() == pytest.approx([2 / 3] * 6)
    assert batch.weights[0, :2].tolist() == [0.0, 0.0]  # prompt tokens carry no weight
    assert batch.advantages[0, 2:4].tolist() == pytest.approx([0.5, 1.0], abs=1e-5)
    assert batch.advantages[2, 2:4].tolist() == pytest.approx([-0.5, -1.0], abs=1e-5)


def test_critic_advantages_equal_hierarchical_gae_per_role_and_episode():
    from langgraph_omar.rl.advantages import hierarchical_gae

    settings = AdvantageSettings(mode="hierarchical-critic", lam_turn=0.9, gamma_turn=0.8, lam_token=0.7)
    eps = [episode("1", [turn("a", [1, 2]), turn("a", [3, 4, 5])], {"a": 2.0}, group="g")]
    samples, _ = collect_samples(eps)
    batch = pad_samples(samples, PAD)
    values = torch.arange(batch.input_ids.numel(), dtype=torch.float32).view_as(batch.old_logprobs) / 10
    assign_critic_advantages(batch, eps, values, settings)
    token_values = [values[0, 2:4], values[1, 2:5]]
    _, expected_adv, expected_ret = hierarchical_gae(
        token_values, torch.tensor([0.0, 2.0]), 0.8, 0.9, 1.0, 0.7
    )
    assert torch.allclose(batch.advantages[0, 2:4], expected_adv[0])
    assert torch.allclose(batch.advantages[1, 2:5], expected_adv[1])
    assert batch.returns is not None and torch.allclose(batch.returns[1, 2:5], expected_ret[1])
    assert batch.advantages[0, :2].abs().sum() == 0


def test_filtered_bc_keeps_the_top_fraction_per_group_and_role_above_the_threshold():
    rewards = [0.1, 0.9, 0.5, 0.3, 0.7]
    eps = [episode(str(i), [turn("a", [1])], {"a": r}, group="g") for i, r in enumerate(rewards)]
    samples, _ = collect_samples(eps)
    # top 40% of 5 episodes = 2: episodes 1 (0.9) and 4 (0.7)
    assert filtered_bc_rows(eps, samples, FilterSettings(top_fraction=0.4)) == [1, 4]
    assert filtered_bc_rows(eps, samples, FilterSettings(top_fraction=0.4, min_reward=0.8)) == [1]
    batch = build_batch(eps, AdvantageSettings(), EmaBaseline(), PAD, FilterSettings(top_fraction=0.4))
    assert batch is not None and len(batch) == 2 and batch.metrics["bc_kept_turns"] == 2


def test_an_iteration_without_any_trainable_turn_gives_no_batch():
    failed = episode("bad", [turn("a", [1])], {"a": 1.0})
    failed.status = "failed"
    assert build_batch([failed], AdvantageSettings(), EmaBaseline(), PAD) is None
    with pytest.raises(ValueError, match="no turns to train on"):
        pad_samples([], PAD)


def test_a_degenerate_penalty_gives_signal_when_every_outcome_reward_is_zero():
    # Both episodes score 0. Without a penalty every advantage is 0 (the degenerate turn's is zeroed too).
    # With penalty 0.5 the degenerate turn's reward is -0.5: G = [-0.5] vs [0]; mean -0.25, std 0.25
    # -> A = (-0.5 + 0.25) / 0.25 = -1 and (0 + 0.25) / 0.25 = +1.
    eps = [
        episode("1", [turn("a", [1], degenerate="off_format")], {"a": 0.0}, group="g"),
        episode("2", [turn("a", [2])], {"a": 0.0}, group="g"),
    ]
    samples, _ = collect_samples(eps)
    plain = critic_free_turn_advantages(eps, samples, AdvantageSettings(), EmaBaseline())
    assert plain.tolist() == [0.0, 0.0]
    penalized = critic_free_turn_advantages(
        eps, samples, AdvantageSettings(degenerate_penalty=0.5), EmaBaseline()
    )
    assert penalized.tolist() == pytest.approx([-1.0, 1.0], abs=1e-5)
    batch = build_batch(eps, AdvantageSettings(degenerate_penalty=0.5), EmaBaseline(), PAD)
    assert batch is not None and batch.advantages[0, 2].item() == pytest.approx(-1.0, abs=1e-5)
