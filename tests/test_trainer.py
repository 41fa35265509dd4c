"""The trainer: config validation, degenerate turns, token-faithful log-probabilities, accumulation, KL,
critic mode, filtered BC and checkpoints, on a tiny model."""

from __future__ import annotations

import os

import pytest
import torch
from selfplay_toy import toy_policy

from langgraph_omar.rl.advantages import EmaBaseline
from langgraph_omar.rl.batch import TrainingBatch, build_batch
from langgraph_omar.rl.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from langgraph_omar.rl.config import ConfigError, DegenerateSettings, RunConfig, field_help
from langgraph_omar.rl.degenerate import mark_degenerate, repeated_ngram_fraction
from langgraph_omar.rl.trainer import PPOTrainer
from langgraph_omar.serving.sampling import SamplingParams
from langgraph_omar.trajectory import Episode, Turn

PROMPTS = ["Say hello.", "Offer a price.", "Walk away now."]


def rollout(policy, temperature: float = 0.7, episodes: int = 4) -> list[Episode]:
    """Two-role episodes from the engine with seeded sampling; reward: share of upper-case characters."""
    out = []
    for e in range(episodes):
        turns, rewards = [], {}
        for r, role in enumerate(("a", "b")):
            ids, _ = policy.render([{"role": "user", "content": PROMPTS[(e + r) % 3]}], 8)
            params = SamplingParams(temperature=temperature, max_new_tokens=8, seed=100 * e + r)
            rec = policy.generate(ids, params, adapter="policy")
            turns.append(
                Turn(
                    role,
                    role,
                    rec.text,
                    rec.prompt_ids,
                    rec.completion_ids,
                    rec.logprobs,
                    temperature=rec.temperature,
                    finish_reason=rec.finish_reason,
                )
            )
            rewards[role] = sum(c.isupper() for c in rec.text) / max(len(rec.text), 1)
        out.append(Episode(f"e{e}", turns, rewards, metadata={"group_id": f"g{e // 2}"}))
    return out


def config(**sections) -> RunConfig:
    # float32 on a CPU, as the toy engine serves: the exactness these tests check (bf16: test_precision.py)
    on_cpu = os.environ.get("OMAR_TEST_DEVICE", "cpu") == "cpu"
    update = {"micro_batch_size": 4, "mixed_precision": "no" if on_cpu else "auto"}
    data: dict[str, dict] = {"lora": {"target_modules": ["all-linear"]}, "update": update}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return RunConfig.from_dict(data)


def batch_of(episodes: list[Episode], cfg: RunConfig) -> TrainingBatch:
    batch = build_batch(episodes, cfg.advantage, EmaBaseline(), 0)
    assert batch is not None
    return batch


def trainer_for(cfg: RunConfig, seed: int = 0) -> PPOTrainer:
    torch.manual_seed(1234)  # the LoRA A matrices' init
    return PPOTrainer(toy_policy(f"tiny-{seed}", seed=seed), cfg)


def lora_state(trainer: PPOTrainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.module.peft_model.named_parameters() if "lora_" in k}


# ---- config ---------------------------------------------------------------------------------------------


def test_config_rejects_unknown_keys_bad_types_and_bad_values_with_the_key_named(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("update:\n  epochs: 2\nlora:\n  rank: 4\n")
    loaded = RunConfig.from_yaml(path)
    assert (loaded.update.epochs, loaded.lora.rank, loaded.lora.alpha) == (2, 4, 16)
    assert RunConfig.from_dict(loaded.to_dict()) == loaded
    cases = {
        "trainer:\n  epochs: 2\n": "unknown section",
        "update:\n  epoch: 2\n": r"update: unknown key\(s\) \['epoch'\]",
        "update:\n  epochs: two\n": "update.epochs must be a number",
        "update:\n  epochs: 0\n": "update.epochs must be >= 1",
        "advantage:\n  mode: ppo\n": "advantage.mode must be one of",
        "selfplay:\n  episodes_per_iteration: 6\n  group_size: 4\n": "a multiple of group_size",
        "update:\n  skip_zero_advantage: 1\n": "must be true or false",
        "update: [1, 2]\n": "section 'update' must be a mapping",
        "update:\n  epochs: [\n": "not valid YAML",
    }
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            RunConfig.from_yaml(path)
    for mode in ("grpo", "rloo"):
        with pytest.raises(ConfigError, match="group_size >= 2"):
            RunConfig.from_dict({"advantage": {"mode": mode}, "selfplay": {"group_size": 1}})
    with pytest.raises(ConfigError, match="turn_reward_weight must be >= 0"):
        RunConfig.from_dict({"advantage": {"turn_reward_weight": -1.0}})
    assert all(field_help(DegenerateSettings).values())  # every field documents itself


# ---- degenerate turns ----------------------------------------------------------------------------------


def test_repeated_ngram_fraction_by_hand():
    # [1, 2, 1, 2, 1, 2], n = 2: bigrams 12 21 12 21 12 -> 2 distinct of 5 -> 1 - 2/5 = 0.6
    assert repeated_ngram_fraction([1, 2, 1, 2, 1, 2], 2) == pytest.approx(0.6)
    assert repeated_ngram_fraction([1, 2, 3], 2) == 0.0
    assert repeated_ngram_fraction([1], 4) == 0.0


def test_each_kind_of_degenerate_turn_is_marked_and_counted():
    def t(role, text, ids, finish="stop", fallback=None):
        return Turn(role, role, text, [1], ids, [0.0] * len(ids), finish_reason=finish, fallback=fallback)

    episode = Episode(
        "e",
        [
            t("a", "OFFER 10", [5, 6]),  # fine
            t("b", "  ", [7]),  # empty
            t("a", "blah blah", [8, 9], finish="length"),  # over length
            t("b", "no action here", [10, 11], fallback="talk"),  # off format: the env replaced it
            t("a", "OFFER 10, that is my price", [5, 6]),
            t("b", "REJECT", [12]),
            t("b", "REJECT", [12]),  # a short repeat is a legitimate move
            t("a", "offer 10,  that is my PRICE", [5, 6]),  # repeats a's turn (case and spacing ignored)
            t("b", "x", [3, 4, 3, 4, 3, 4, 3, 4]),  # loops: 4-grams 3434 4343 ... mostly repeated
        ],
        {"a": 1.0, "b": 0.0},
    )
    counts = mark_degenerate([episode], DegenerateSettings())
    assert [turn.degenerate for turn in episode.turns] == [
        None,
        "empty",
        "over_length",
        "off_format",
        None,
        None,
        None,
        "repeated",
        "repeated",
    ]
    assert counts["degenerate_turns"] == 5 and counts["degenerate_repeated"] == 2
    assert counts["degenerate_fraction"] == pytest.approx(5 / 9)


# ---- the update ------------------------------------------------------------------------------------------


def test_recomputed_logprobs_match_the_recorded_ones_so_the_ratio_starts_at_one():
    trainer = trainer_for(config())
    episodes = rollout(trainer.policy, temperature=0.7)  # tempered: the trainer divides by the turn's T
    batch = build_batch(episodes, trainer.config.advantage, EmaBaseline(), 0)
    assert batch is not None
    metrics = trainer.update(batch, episodes)
    assert metrics["logprob_mismatch_tokens"] > 0
    # CPU: float32 both ways. GPU: the trainer's bf16 autocast vs the engine's float32 generation.
    assert metrics["logprob_mismatch"] < (2e-2 if trainer.policy.device.type == "cuda" else 1e-4)
    assert trainer.policy.adapter_versions["policy"] == 2
    assert not trainer.module.training  # back in eval mode for the engine


def test_micro_batches_with_accumulation_give_the_same_update_as_one_big_batch():
    states = []
    for micro, steps in ((4, 1), (1, 4)):
        cfg = config(
            update={
                "micro_batch_size": micro,
                "gradient_accumulation_steps": steps,
                "skip_zero_advantage": False,
            }
        )
        trainer = trainer_for(cfg)
        episodes = rollout(trainer.policy, episodes=2)  # 4 turns: one optimizer step either way
        batch = build_batch(episodes, cfg.advantage, EmaBaseline(), 0)
        assert batch is not None
        # fixed, uneven advantages (whatever was sampled), so that the gradient is not trivially 0
        batch.advantages = torch.linspace(-1, 1, batch.advantages.numel()).view_as(batch.advantages)
        batch.advantages = batch.advantages * batch.completion_mask
        metrics = trainer.update(batch, episodes)
        assert metrics["optimizer_steps"] == 1
        states.append(lora_state(trainer))
    assert states[0].keys() == states[1].keys()
    # float32 on a CPU: equal up to summation order. bf16 autocast on a GPU: Adam's first step is lr * sign(g),
    # so a rounding-flipped sign of a near-zero gradient moves a weight by at most 2 lr.
    atol = 2.1e-4 if states[0][next(iter(states[0]))].is_cuda else 1e-6
    for key in states[0]:
        assert torch.allclose(states[0][key], states[1][key], atol=atol), key


def test_kl_to_the_adapter_disabled_base_starts_at_zero_and_grows():
    cfg = config(update={"kl_coef": 0.1}, optimizer={"learning_rate": 1e-2})  # one optimizer step per update
    trainer = trainer_for(cfg)
    episodes = rollout(trainer.policy)
    first = trainer.update(batch_of(episodes, cfg), episodes)
    second = trainer.update(batch_of(episodes, cfg), episodes)
    # LoRA B starts at zero, so the policy is the base until the first optimizer step, which comes after
    # every token of the first update was seen: KL 0. After that step the policy differs from the base.
    assert first["optimizer_steps"] == 1
    assert first["kl"] == pytest.approx(0.0, abs=1e-6)
    assert second["kl"] > 1e-4


def test_critic_mode_trains_a_value_head_and_checkpoints_restore_everything(tmp_path):
    cfg = config(advantage={"mode": "hierarchical-critic"}, optimizer={"learning_rate": 1e-2})
    trainer = trainer_for(cfg)
    assert trainer.value_head is not None
    episodes = rollout(trainer.policy)
    metrics = trainer.update(batch_of(episodes, cfg), episodes)
    assert metrics["value_loss"] > 0 and "explained_variance" in metrics
    assert trainer.value_head.weight.abs().sum() > 0  # it learned from zero
    ema = EmaBaseline()
    ema.advantage("game", "a", 1.0)
    save_checkpoint(tmp_path, 1, trainer, ema)
    saved_lora, saved_head = lora_state(trainer), trainer.value_head.weight.detach().clone()
    trainer.update(batch_of(episodes, cfg), episodes)  # move on
    fresh = trainer_for(cfg)
    restored_ema = EmaBaseline()
    checkpoint = latest_checkpoint(tmp_path)
    assert checkpoint is not None and fresh.value_head is not None
    assert load_checkpoint(checkpoint, fresh, restored_ema) == 1
    assert all(torch.equal(saved_lora[k], v) for k, v in lora_state(fresh).items())
    assert torch.equal(fresh.value_head.weight, saved_head)
    assert restored_ema.baseline("game", "a") == pytest.approx(0.05)
    assert fresh.optimizer_steps == 1 and fresh.updates_done == 1


def test_filtered_bc_raises_the_logprob_of_the_kept_turns():
    cfg = config(
        update={"algo": "filtered-bc", "epochs": 3},
        optimizer={"learning_rate": 1e-2},
        filter={"top_fraction": 0.5},
    )
    trainer = trainer_for(cfg)
    episodes = rollout(trainer.policy)
    batch = build_batch(episodes, cfg.advantage, EmaBaseline(), 0, cfg.filter)
    assert batch is not None
    first = trainer.update(batch, episodes)
    second = trainer.update(batch, episodes)
    assert second["bc_loss"] < first["bc_loss"]  # -mean logprob of the kept turns went down


# ---- critic mode: which state a token's value is read from ---------------------------------------------------


def test_critic_last_token_advantage_is_reward_minus_the_value_of_the_state_before_it():
    # Each role plays one turn, so its last token's advantage is A_K = r_K - V_K (turn level) and the token
    # level ends on it: reward - V(state in which the last token was chosen) = reward - head(h at p - 1).
    cfg = config(advantage={"mode": "hierarchical-critic", "whiten": "none"}, update={"value_clip": 0.2})
    trainer = trainer_for(cfg)
    assert trainer.value_head is not None
    with torch.no_grad():
        trainer.value_head.weight.copy_(
            torch.linspace(-0.05, 0.05, trainer.value_head.weight.numel()).view(1, -1)
        )
        trainer.value_head.bias.fill_(0.25)
    episodes = rollout(trainer.policy, episodes=2)
    batch = batch_of(episodes, cfg)
    device = trainer.policy.device
    with torch.no_grad():
        _, state_values = trainer.module(batch.input_ids.to(device), batch.attention_mask.to(device))
    state_values = state_values.float().cpu()
    tolerance = 5e-2 if device.type == "cuda" else 1e-4  # the trainer's bf16 autocast on a GPU
    trainer.update(batch, episodes)
    assert batch.old_values is not None and batch.returns is not None
    for row, sample in enumerate(batch.samples):
        positions = batch.completion_mask[row].nonzero().squeeze(-1)
        last = int(positions.max())
        before = float(state_values[row, last - 1])  # the hidden state whose logits gave the last token
        reward = episodes[sample.episode_index].rewards[sample.role]
        assert float(batch.advantages[row, last]) == pytest.approx(reward - before, abs=tolerance)
        assert batch.old_values[row, positions].tolist() == pytest.approx(
            state_values[row, positions - 1].tolist(), abs=tolerance
        )


def test_a_value_head_trained_on_known_returns_predicts_them():
    # One role; the reward is known from the prompt: 1 after PROMPTS[0], -1 after PROMPTS[1]. With gamma and
    # lambda 1 every token's value target is the episode's reward, so a trained critic must read, at every
    # completion token, the value of its prompt: the values the advantages use are the ones the loss trained.
    cfg = config(
        advantage={"mode": "hierarchical-critic", "lam_turn": 1.0, "whiten": "none"},
        update={"epochs": 4, "value_coef": 1.0},
        optimizer={"learning_rate": 1e-3},
    )
    trainer = trainer_for(cfg)
    policy = trainer.policy
    episodes = []
    for e in range(8):
        ids, _ = policy.render([{"role": "user", "content": PROMPTS[e % 2]}], 8)
        rec = policy.generate(
            ids, SamplingParams(temperature=1.0, max_new_tokens=6, seed=e), adapter="policy"
        )
        turn = Turn("a", "a", rec.text, rec.prompt_ids, rec.completion_ids, rec.logprobs, temperature=1.0)
        episodes.append(Episode(f"e{e}", [turn], {"a": 1.0 if e % 2 == 0 else -1.0}))
    for _ in range(20):
        trainer.update(batch_of(episodes, cfg), episodes)
    batch = batch_of(episodes, cfg)
    trainer.update(batch, episodes)  # its pre-pass records the values the advantages were computed from
    assert batch.old_values is not None
    for row, sample in enumerate(batch.samples):
        expected = episodes[sample.episode_index].rewards["a"]
        values = batch.old_values[row][batch.completion_mask[row]]
        assert values.tolist() == pytest.approx([expected] * len(values), abs=0.15), row


def test_fit_value_head_learns_known_returns_without_moving_the_policy():
    # The reward is known from the prompt (1, -1, 0 after PROMPTS[0], [1], [2]; one sampling seed per prompt)
    # and gamma is 1, so every token's Monte Carlo return is its episode's reward: the head fitted on 9 episodes
    # must read it in the 3 held out, and no LoRA weight moves.
    cfg = config(advantage={"mode": "hierarchical-critic"})
    trainer = trainer_for(cfg)
    policy = trainer.policy
    episodes = []
    for e in range(12):
        ids, _ = policy.render([{"role": "user", "content": PROMPTS[e % 3]}], 8)
        rec = policy.generate(
            ids, SamplingParams(temperature=1.0, max_new_tokens=6, seed=e % 3), adapter="policy"
        )
        turn = Turn("a", "a", rec.text, rec.prompt_ids, rec.completion_ids, rec.logprobs, temperature=1.0)
        episodes.append(Episode(f"e{e}", [turn], {"a": [1.0, -1.0, 0.0][e % 3]}))
    before = lora_state(trainer)
    batch = batch_of(episodes, cfg)
    metrics = trainer.fit_value_head(batch, episodes)
    assert metrics["value_fit_explained_variance_held_out_before"] == pytest.approx(
        0.0, abs=1e-6
    )  # zero head
    assert metrics["value_fit_explained_variance_held_out_after"] > 0.9  # episodes 3, 7 and 11
    assert metrics["value_fit_tokens"] == float(batch.completion_mask.sum())
    assert all(torch.equal(before[k], v) for k, v in lora_state(trainer).items())
    # the PPO update that follows computes its advantages from the fitted values
    update = trainer.update(batch, episodes)
    assert update["value_explained_variance"] > 0.9
    assert PPOTrainer(toy_policy("tiny-free", seed=0), config()).fit_value_head(batch, episodes) == {}


def test_behaviour_cloning_in_critic_mode_trains_no_critic_through_the_lora():
    # the warm start of a critic run: the BC rows keep their weights and no value loss moves the shared LoRA
    cfg = config(advantage={"mode": "hierarchical-critic"}, filter={"top_fraction": 1.0})
    trainer = trainer_for(cfg)
    episodes = rollout(trainer.policy)
    batch = build_batch(episodes, cfg.advantage, EmaBaseline(), 0, cfg.filter)
    assert batch is not None and batch.behaviour_cloning
    weights = batch.weights.clone()
    metrics = trainer.update(batch, episodes)
    assert "bc_loss" in metrics and "value_loss" not in metrics
    assert torch.equal(batch.weights, weights) and batch.returns is None
