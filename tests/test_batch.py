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
    finish_advantages,
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


def test_hierarchical_compares_each_turn_position_with_the_same_position_in_its_group():
    # gamma_turn 0.5, role a. Episode 1: 2 turns, R = 1 -> r = [0, 1], G = [0.5, 1]. Episode 2: 1 turn, R = 0
    # -> G = [0]. Episode 3: 2 turns, R = 0.5 -> G = [0.25, 0.5].
    # Turn 1: G = [0.5, 0, 0.25], mean 0.25 -> A = [0.25, -0.25, 0]. Turn 2 (episodes 1 and 3): G = [1, 0.5],
    # mean 0.75 -> [0.25, -0.25]. (Unscaled: the positions an EMA baseline fills in are G - b, on this scale.)
    eps = [
        episode("1", [turn("a", [1]), turn("a", [2])], {"a": 1.0}, group="g"),
        episode("2", [turn("a", [3])], {"a": 0.0}, group="g"),
        episode("3", [turn("a", [4]), turn("a", [5])], {"a": 0.5}, group="g"),
    ]
    samples, _ = collect_samples(eps)
    settings = AdvantageSettings(mode="hierarchical", gamma_turn=0.5)
    adv = critic_free_turn_advantages(eps, samples, settings, EmaBaseline())
    assert adv.tolist() == pytest.approx([0.25, 0.25, -0.25, 0.0, -0.25], abs=1e-5)


def test_group_and_ema_positions_give_advantages_on_one_scale():
    # Issue 24: episodes of 5 and 3 turns with rewards 0.1 and 0 (gamma 1): G = [0.1] * 5 and [0] * 3. The
    # first three positions compare with the group's mean 0.05 -> +-0.05; positions 4 and 5 only the longer
    # episode reached: its EMA baseline there (0) -> 0.1. Z-scores at the shared positions gave [1, 1, 1, 0.1, 0.1].
    eps = [
        episode("1", [turn("a", [k]) for k in range(5)], {"a": 0.1}, group="g"),
        episode("2", [turn("a", [k]) for k in range(3)], {"a": 0.0}, group="g"),
    ]
    samples, _ = collect_samples(eps)
    adv = critic_free_turn_advantages(eps, samples, AdvantageSettings(mode="hierarchical"), EmaBaseline())
    assert adv.tolist() == pytest.approx([0.05, 0.05, 0.05, 0.1, 0.1, -0.05, -0.05, -0.05], abs=1e-6)


def test_identical_episodes_get_zero_advantage_at_every_turn_whatever_gamma():
    # Issue 12: per-turn rewards 1, 1, 1 and gamma 0.5 give G = [1.75, 1.5, 1] in both episodes of the group.
    # Pooling the turn positions gave [1.07, 0.27, -1.34]; each position compared with itself gives 0.
    eps = [
        episode(str(i), [turn("a", [k], reward=1.0) for k in range(3)], {"a": 0.0}, group="g")
        for i in range(2)
    ]
    samples, _ = collect_samples(eps)
    settings = AdvantageSettings(mode="hierarchical", gamma_turn=0.5)
    adv = critic_free_turn_advantages(eps, samples, settings, EmaBaseline())
    assert adv.tolist() == pytest.approx([0.0] * 6, abs=1e-6)


def test_a_turn_position_only_one_episode_reached_uses_that_positions_ema_baseline():
    # gamma 0.5: episode 1 G = [0.5, 1] (2 turns, R = 1), episode 2 G = [0] (1 turn, R = 0).
    # Turn 1: [0.5, 0] -> mean 0.25 -> A = [0.25, -0.25]. Turn 2: episode 1 alone: its EMA baseline at
    # turn 2 (still 0) -> A = 1 - 0 = 1. Then the EMA learns every position: turn 1 from 0.5 then 0
    # (0.05 * 0.5 = 0.025, then 0.95 * 0.025 = 0.02375), turn 2 from 1 (0.05).
    eps = [
        episode("1", [turn("a", [1]), turn("a", [2])], {"a": 1.0}, group="g", baseline_key="game"),
        episode("2", [turn("a", [3])], {"a": 0.0}, group="g", baseline_key="game"),
    ]
    samples, _ = collect_samples(eps)
    ema = EmaBaseline(decay=0.95)
    settings = AdvantageSettings(mode="hierarchical", gamma_turn=0.5)
    adv = critic_free_turn_advantages(eps, samples, settings, ema)
    assert adv.tolist() == pytest.approx([0.25, 1.0, -0.25], abs=1e-5)
    assert ema.baseline("game", "a", turn=0) == pytest.approx(0.02375)
    assert ema.baseline("game", "a", turn=1) == pytest.approx(0.05)


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


def test_groups_of_one_episode_read_the_ema_baseline_of_each_turn_position():
    # Per-turn rewards 1, 1, 1, gamma 0.5: G = [1.75, 1.5, 1]. The first episode reads b = 0 everywhere; each
    # position's baseline then learns its own return (0.05 G_k), so the second reads A = 0.95 G_k. (One baseline
    # learnt from the first turn's return and subtracted from every turn gave [1.6625, 1.4125, 0.9125].)
    eps = [
        episode(
            str(i),
            [turn("a", [k], reward=1.0) for k in range(3)],
            {"a": 0.0},
            group=f"g{i}",
            baseline_key="game",
        )
        for i in range(2)
    ]
    samples, _ = collect_samples(eps)
    settings = AdvantageSettings(mode="hierarchical", gamma_turn=0.5)
    adv = critic_free_turn_advantages(eps, samples, settings, EmaBaseline(decay=0.95))
    assert adv.tolist() == pytest.approx([1.75, 1.5, 1.0, 1.6625, 1.425, 0.95])


def test_rloo_mode_subtracts_the_mean_of_the_other_episodes_of_the_group():
    # Group g, role a: R = [1, 0, 0.5] -> A = [1 - 0.25, 0 - 0.75, 0.5 - 0.5] = [0.75, -0.75, 0]; every turn of
    # the role gets its episode's value. A group of one episode has no other episode: A = 0.
    eps = [
        episode("1", [turn("a", [1]), turn("a", [2])], {"a": 1.0}, group="g"),
        episode("2", [turn("a", [3])], {"a": 0.0}, group="g"),
        episode("3", [turn("a", [4])], {"a": 0.5}, group="g"),
        episode("4", [turn("a", [5])], {"a": 3.0}, group="solo"),
    ]
    samples, _ = collect_samples(eps)
    adv = critic_free_turn_advantages(eps, samples, AdvantageSettings(mode="rloo"), EmaBaseline())
    assert adv.tolist() == pytest.approx([0.75, 0.75, -0.75, 0.0, 0.0])


def test_turn_reward_weight_mixes_each_turns_own_reward_with_the_outcome():
    # Turn rewards [0.2, 0.4], terminal R = 1, gamma_turn 0.5, one episode (EMA baseline 0: A = G).
    # weight w: r = [0.2 w, 0.4 w + 1]. w = 1 (default): r = [0.2, 1.4], G = [0.9, 1.4]; w = 0.5: r = [0.1, 1.2],
    # G = [0.7, 1.2]; w = 0: the outcome alone, G = [0.5, 1].
    eps = [episode("1", [turn("a", [1], reward=0.2), turn("a", [2], reward=0.4)], {"a": 1.0})]
    samples, _ = collect_samples(eps)
    for weight, expected in ((None, [0.9, 1.4]), (0.5, [0.7, 1.2]), (0.0, [0.5, 1.0])):
        options = {} if weight is None else {"turn_reward_weight": weight}
        settings = AdvantageSettings(mode="hierarchical", gamma_turn=0.5, **options)
        adv = critic_free_turn_advantages(eps, samples, settings, EmaBaseline())
        assert adv.tolist() == pytest.approx(expected), weight
    # Critic mode, values 0, every gamma and lambda 1: turn 1's advantage is its return 0.1 + 1.2 = 1.3 (w 0.5).
    settings = AdvantageSettings(
        mode="hierarchical-critic", lam_turn=1.0, whiten="none", turn_reward_weight=0.5
    )
    batch = pad_samples(samples, PAD)
    assign_critic_advantages(batch, eps, torch.zeros_like(batch.old_logprobs), settings)
    assert batch.advantages[0, 2].item() == pytest.approx(1.3)
    assert batch.advantages[1, 2].item() == pytest.approx(1.2)


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
    # With penalty 0.5 the degenerate turn's reward is -0.5: G = [-0.5] vs [0]; mean -0.25
    # -> A = -0.5 + 0.25 = -0.25 and 0 + 0.25 = +0.25.
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
    assert penalized.tolist() == pytest.approx([-0.25, 0.25], abs=1e-5)
    # the batch divides the role's advantages by their std (0.25, whiten role-scale): -1
    batch = build_batch(eps, AdvantageSettings(degenerate_penalty=0.5), EmaBaseline(), PAD)
    assert batch is not None and batch.advantages[0, 2].item() == pytest.approx(-1.0, abs=1e-4)


def test_critic_mode_degenerate_turn_gets_no_policy_signal_and_ordinary_value_targets():
    # One rule in every mode: a degenerate turn's tokens get advantage 0 (no pseudo-reward of their own), and
    # the turn stays a state of the role's turn chain: the critic learns its value from the ordinary targets,
    # and the other turns' advantages do not depend on the flag.
    settings = AdvantageSettings(mode="hierarchical-critic", gamma_turn=0.9, lam_turn=0.8, whiten="none")
    results = []
    for flag in (None, "repeated"):
        eps = [episode("1", [turn("a", [1, 2]), turn("a", [3, 4, 5], degenerate=flag)], {"a": 2.0})]
        samples, _ = collect_samples(eps)
        batch = pad_samples(samples, PAD)
        values = torch.arange(batch.input_ids.numel(), dtype=torch.float32).view_as(batch.old_logprobs) / 10
        assign_critic_advantages(batch, eps, values, settings)
        finish_advantages(batch, eps, settings)
        results.append(batch)
    plain, flagged = results
    assert flagged.advantages[1].abs().sum() == 0 and plain.advantages[1].abs().sum() > 0
    assert torch.equal(flagged.advantages[0], plain.advantages[0])
    assert plain.returns is not None and flagged.returns is not None
    assert torch.equal(flagged.returns, plain.returns)


def test_critic_last_token_advantage_is_reward_minus_the_value_before_it_by_hand():
    # Values aligned with input_ids: position p holds V(state in which token p was chosen). Role a, one turn
    # of tokens at positions 2, 3, value 0.4 then 0.7, R = 2, every gamma and lambda 1:
    # turn level A = 2 - 0.7 = 1.3; token level r' = [0, 1.3 + 0.7 = 2]: A = [0.7 - 0.4 + 1.3, 2 - 0.7] =
    # [1.6, 1.3]; value targets A + V = [2, 2].
    settings = AdvantageSettings(mode="hierarchical-critic", lam_turn=1.0, whiten="none")
    eps = [episode("1", [turn("a", [1, 2])], {"a": 2.0})]
    samples, _ = collect_samples(eps)
    batch = pad_samples(samples, PAD)
    assign_critic_advantages(batch, eps, torch.tensor([[9.0, 9.0, 0.4, 0.7]]), settings)
    assert batch.advantages[0].tolist() == pytest.approx([0.0, 0.0, 1.6, 1.3])
    assert batch.returns is not None and batch.returns[0].tolist() == pytest.approx([0.0, 0.0, 2.0, 2.0])


def test_role_balance_counts_only_the_tokens_that_train():
    # grpo. Group g: episode 1 a: 2 live tokens + 4 degenerate ones, b: 6 tokens; episode 2 a: 2, b: 2;
    # rewards a 1/0, b 0/1. Group h: every reward equal -> advantage 0, skipped: no token of it trains.
    # Trained tokens: a 2 + 2 = 4, b 6 + 2 = 8, N = 12 -> w_a = 12 * 1/2 / 4 = 1.5, w_b = 12 * 1/2 / 8 = 0.75.
    eps = [
        episode(
            "1",
            [
                turn("a", [1, 2]),
                turn("a", [3, 4, 5, 6], degenerate="repeated"),
                turn("b", [1, 2, 3, 4, 5, 6]),
            ],
            {"a": 1.0, "b": 0.0},
            group="g",
        ),
        episode("2", [turn("a", [1, 2]), turn("b", [3, 4])], {"a": 0.0, "b": 1.0}, group="g"),
        episode("3", [turn("a", [1, 2]), turn("b", [3, 4])], {"a": 1.0, "b": 1.0}, group="h"),
        episode("4", [turn("a", [5, 6]), turn("b", [7, 8])], {"a": 1.0, "b": 1.0}, group="h"),
    ]
    batch = build_batch(eps, AdvantageSettings(mode="grpo"), EmaBaseline(), PAD)
    assert batch is not None
    weights = [row[mask].tolist() for row, mask in zip(batch.weights, batch.completion_mask, strict=True)]
    assert weights == [
        pytest.approx([1.5, 1.5]),
        [0.0] * 4,  # degenerate
        pytest.approx([0.75] * 6),
        pytest.approx([1.5, 1.5]),
        pytest.approx([0.75, 0.75]),
        *[[0.0, 0.0]] * 4,  # zero advantage
    ]


# ---------------------------------------------------------------------------------------- agents and roles


def wolves(eid: str, ada: float, bo: float, group: str | None = None, **turn_rewards: float) -> Episode:
    """Role w played by two agents, Ada (turns 1 and 3) and Bo (turn 2); each agent its own terminal reward,
    the role the mean. turn_rewards: an agent's own per-turn reward on each of its turns."""
    turns = [
        turn("w", [1], agent="Ada", reward=turn_rewards.get("Ada", 0.0)),
        turn("w", [2], agent="Bo", reward=turn_rewards.get("Bo", 0.0)),
        turn("w", [3], agent="Ada", reward=turn_rewards.get("Ada", 0.0)),
    ]
    ep = episode(eid, turns, {"w": (ada + bo) / 2}, group=group, baseline_key="game")
    ep.agent_rewards = {"Ada": ada, "Bo": bo}
    return ep


def test_two_agents_of_one_role_are_two_turn_chains_each_with_its_own_terminal_reward():
    # Critic mode, values 0, every gamma and lambda 1: a turn's advantage is its chain's return. Ada: r = [0.1,
    # 1 + 0.1] -> [1.2, 1.1]; Bo: r = [-0.2 + 0] -> [-0.2]. (Merged into one chain of role w: r = [0.1, -0.2,
    # 0.1 + 0.5] -> [0.5, 0.4, 0.6]: Bo's outcome and behaviour reward flowed into Ada's turns, and back.)
    eps = [wolves("1", ada=1.0, bo=0.0, Ada=0.1, Bo=-0.2)]
    samples, _ = collect_samples(eps)
    assert [(s.role, s.agent) for s in samples] == [("w", "Ada"), ("w", "Bo"), ("w", "Ada")]
    settings = AdvantageSettings(mode="hierarchical-critic", lam_turn=1.0, whiten="none")
    batch = pad_samples(samples, PAD)
    assign_critic_advantages(batch, eps, torch.zeros_like(batch.old_logprobs), settings)
    assert batch.advantages[:, 2].tolist() == pytest.approx([1.2, -0.2, 1.1])
    assert batch.roles == ["w", "w", "w"]  # whitening and role balance still group by role


def test_agents_of_one_role_share_its_baseline_across_the_episodes_of_a_group():
    # hierarchical, gamma 1, group g of two episodes: chains Ada1 G = [1, 1], Bo1 [0], Ada2 [0, 0], Bo2 [1].
    # Position 1: [1, 0, 0, 1] -> mean 0.5 -> [0.5, -0.5, -0.5, 0.5]; position 2 (Ada1, Ada2): [0.5, -0.5].
    eps = [wolves("1", ada=1.0, bo=0.0, group="g"), wolves("2", ada=0.0, bo=1.0, group="g")]
    samples, _ = collect_samples(eps)
    settings = AdvantageSettings(mode="hierarchical", gamma_turn=1.0)
    adv = critic_free_turn_advantages(eps, samples, settings, EmaBaseline())
    assert adv.tolist() == pytest.approx([0.5, -0.5, 0.5, -0.5, 0.5, -0.5], abs=1e-5)


def test_agents_of_one_episode_are_not_each_others_baseline():
    # A group of one episode: two teammates' returns differ by their own fates, not by how the episode went,
    # so they are not compared with each other (that would cancel the shared outcome). Each chain reads the
    # role's EMA baseline instead: Ada G = [1, 1] against b = 0 -> [1, 1], then Bo reads turn 1's baseline
    # after Ada's update (0.05 * 1) -> 0.5 - 0.05 = 0.45. grpo and rloo: no other episode, advantage 0.
    eps = [wolves("1", ada=1.0, bo=0.5, group="g")]
    samples, _ = collect_samples(eps)
    adv = critic_free_turn_advantages(
        eps, samples, AdvantageSettings(mode="hierarchical", gamma_turn=1.0), EmaBaseline(decay=0.95)
    )
    assert adv.tolist() == pytest.approx([1.0, 0.45, 1.0])
    for mode in ("grpo", "rloo"):
        adv = critic_free_turn_advantages(eps, samples, AdvantageSettings(mode=mode), EmaBaseline())
        assert adv.tolist() == [0.0, 0.0, 0.0], mode


def test_grpo_and_filtered_bc_rank_each_agents_own_reward():
    # grpo over a group of two episodes, role w: R = [Ada 1, Bo 0, Ada 0, Bo 0] -> mean 0.25, std 0.433.
    eps = [wolves("1", ada=1.0, bo=0.0, group="g"), wolves("2", ada=0.0, bo=0.0, group="g")]
    samples, _ = collect_samples(eps)
    adv = critic_free_turn_advantages(eps, samples, AdvantageSettings(mode="grpo"), EmaBaseline())
    high, low = 0.75 / math.sqrt(0.1875), -0.25 / math.sqrt(0.1875)
    assert adv.tolist() == pytest.approx([high, low, high, low, low, low], abs=1e-4)
    # filtered BC keeps the best quarter of the role's trajectories: Ada's in episode 1 (both her turns)
    assert filtered_bc_rows(eps, samples, FilterSettings(top_fraction=0.25)) == [0, 2]
    assert build_batch(eps, AdvantageSettings(mode="grpo"), EmaBaseline(), PAD).metrics["trajectories"] == 4


def test_hierarchical_mode_puts_each_roles_advantages_on_a_unit_scale_by_default():
    # G - b everywhere (issue 24, item 5), then each role's advantages divided by their std over the batch
    # (`whiten: role-scale`), not centred: turns without signal keep advantage 0.
    eps = [wolves("1", ada=1.0, bo=0.0, group="g"), wolves("2", ada=0.0, bo=1.0, group="g")]
    assert AdvantageSettings(mode="hierarchical").whiten_mode == "role-scale"
    batch = build_batch(eps, AdvantageSettings(mode="hierarchical", gamma_turn=1.0), EmaBaseline(), PAD)
    assert batch is not None
    values = batch.advantages[batch.completion_mask]
    assert values.abs().max().item() == pytest.approx(1.0, abs=1e-4)  # 0.5 / std 0.5
