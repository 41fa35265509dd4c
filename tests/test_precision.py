"""Precision per phase: the `auto` choice from the CPU's features, bf16 prefill in the engine (recorded
log-probabilities still match a float32 recompute), and the update's recomputed old log-probabilities (the PPO
ratio is 1 at step 0 whatever numerics the rollout used)."""

from __future__ import annotations

import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from selfplay_toy import toy_policy
from torch.func import functional_call

from langgraph_omar.errors import OmarError
from langgraph_omar.rl.advantages import EmaBaseline
from langgraph_omar.rl.batch import build_batch
from langgraph_omar.rl.config import ConfigError, RunConfig
from langgraph_omar.rl.trainer import PolicyWithValueHead, PPOTrainer
from langgraph_omar.serving.precision import (
    autocast_forward,
    cpu_flags_from,
    frozen_weight_casts,
    mixed_precision,
    resolve_dtype,
)
from langgraph_omar.serving.sampling import SamplingParams
from langgraph_omar.testing import tiny_model, tiny_policy
from langgraph_omar.trajectory import Episode, Turn

ZEN4 = frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni"})
SAPPHIRE_RAPIDS = frozenset({"avx512f", "amx_bf16", "amx_tile"})
OLD_XEON = frozenset({"avx2", "avx512f", "avx512_vnni"})
CPU = torch.device("cpu")


def test_cpu_flags_are_read_from_the_first_processor_of_cpuinfo():
    text = "processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t: sse\n"
    assert cpu_flags_from(text) == {"fpu", "avx512f", "avx512_bf16"}
    assert cpu_flags_from("Features\t: fp asimd bf16\n") == {"fp", "asimd", "bf16"}  # arm64's spelling
    assert cpu_flags_from("") == frozenset()


@pytest.mark.parametrize("flags", [ZEN4, SAPPHIRE_RAPIDS])
def test_auto_uses_bf16_for_prefill_and_update_on_bf16_cores_and_for_decode_only_with_amx(flags):
    assert resolve_dtype("auto", "prefill", CPU, flags) == torch.bfloat16
    assert resolve_dtype("auto", "update", CPU, flags) == torch.bfloat16
    decode = torch.bfloat16 if flags == SAPPHIRE_RAPIDS else torch.float32  # one-token steps need AMX tiles
    assert resolve_dtype("auto", "decode", CPU, flags) == decode
    assert mixed_precision("auto", CPU, flags) == "bf16"


def test_auto_stays_float32_on_cores_without_bf16_and_explicit_settings_win():
    for phase in ("prefill", "decode", "update"):
        assert resolve_dtype("auto", phase, CPU, OLD_XEON) == torch.float32
        assert resolve_dtype(None, phase, CPU, OLD_XEON) == torch.float32
        assert resolve_dtype("bfloat16", phase, CPU, OLD_XEON) == torch.bfloat16
        assert resolve_dtype("float32", phase, CPU, ZEN4) == torch.float32
    assert mixed_precision("auto", CPU, OLD_XEON) == "no"
    assert mixed_precision("no", CPU, ZEN4) == "no"


def test_bad_dtype_settings_are_one_line_errors():
    with pytest.raises(OmarError, match="expected one of auto, float32, bfloat16"):
        resolve_dtype("fp8", "prefill", CPU)
    with pytest.raises(OmarError, match="unknown phase"):
        resolve_dtype("auto", "sampling", CPU)
    with pytest.raises(ConfigError, match="selfplay.prefill_dtype"):
        RunConfig.from_dict({"selfplay": {"prefill_dtype": "half"}})
    with pytest.raises(ConfigError, match="update.old_logprobs"):
        RunConfig.from_dict({"update": {"old_logprobs": "sometimes"}})


def _recomputed_logprobs(model, prompt: list[int], completion: list[int], temperature: float) -> torch.Tensor:
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


@pytest.mark.parametrize("prefill", ["float32", "bfloat16"])
def test_a_bf16_prefill_records_logprobs_that_match_a_float32_recompute(prefill):
    policy = tiny_policy(f"tiny-prefill-{prefill}", register=False, prefill_dtype=prefill, max_wait_ms=1)
    assert policy.prefill_dtype == getattr(torch, prefill)
    prompt, _ = policy.render([{"role": "user", "content": "Offer a price for the bike."}], 12)
    params = SamplingParams(temperature=0.7, max_new_tokens=12, seed=3)
    first = policy.generate(prompt, params)
    # a second turn extends the first: it reuses the stored keys and values (float32 after the cast)
    follow = first.prompt_ids + first.completion_ids + prompt[-3:]
    second = policy.generate(follow, params)
    assert policy.prefix_cache is not None and policy.prefix_cache.hits > 0
    for record in (first, second):
        assert record.completion_ids
        expected = _recomputed_logprobs(policy.model, record.prompt_ids, record.completion_ids, 0.7)
        gap = (torch.tensor(record.logprobs) - expected).abs().max().item()
        assert gap < (5e-2 if prefill == "bfloat16" else 1e-4), gap
    for entry in policy.prefix_cache._entries.values():
        assert {t.dtype for t in (*entry.keys, *entry.values)} == {torch.float32}


def _episodes(policy, count: int = 4) -> list[Episode]:
    """Two-role episodes sampled by the engine; the reward is the share of upper-case characters."""
    out = []
    for e in range(count):
        turns, rewards = [], {}
        for r, role in enumerate(("a", "b")):
            ids, _ = policy.render([{"role": "user", "content": f"Say hello {e} {r}."}], 8)
            params = SamplingParams(temperature=0.7, max_new_tokens=8, seed=100 * e + r)
            rec = policy.generate(ids, params, adapter="policy")
            turns.append(
                Turn(role, role, rec.text, rec.prompt_ids, rec.completion_ids, rec.logprobs, temperature=0.7)
            )
            rewards[role] = sum(c.isupper() for c in rec.text) / max(len(rec.text), 1) + 0.1 * e
        out.append(Episode(f"e{e}", turns, rewards, metadata={"group_id": f"g{e // 2}"}))
    return out


@pytest.mark.parametrize(
    ("precision", "weights"), [("no", torch.float32), ("bf16", torch.float32), ("bf16", torch.bfloat16)]
)
def test_recomputed_old_logprobs_start_the_ratio_at_one_and_report_the_rollout_gap(precision, weights):
    """8 turns in one optimizer step: every micro-batch sees the step-0 policy, so with old log-probabilities
    recomputed by the update's own numerics the ratio is exactly 1 and nothing is clipped, even though the
    recorded ones were shifted by 0.3 nats (a stand-in for a sampler with other numerics)."""
    cfg = RunConfig.from_dict(
        {
            "lora": {"target_modules": ["all-linear"]},
            "update": {
                "micro_batch_size": 4,
                "gradient_accumulation_steps": 2,
                "skip_zero_advantage": False,
                "mixed_precision": precision,
                "old_logprobs": "recompute",
                "tis_cap": 2.0,
            },
        }
    )
    torch.manual_seed(1234)
    policy = toy_policy(f"tiny-ratio-{precision}-{weights}")
    policy.model.to(weights)  # bf16: the weights a CPU with AMX serves and decodes in
    trainer = PPOTrainer(policy, cfg)
    assert trainer.recompute_old
    assert {p.dtype for p in trainer.trainable} == {torch.float32}  # the LoRA adapter stays float32
    episodes = _episodes(trainer.policy)
    batch = build_batch(episodes, cfg.advantage, EmaBaseline(), 0)
    assert batch is not None
    mask = batch.completion_mask.bool()
    batch.old_logprobs[mask] -= 0.3  # the rollout's values, 0.3 nats off the trainer's
    metrics = trainer.update(batch, episodes)
    assert metrics["ratio_mean"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["clip_fraction"] == 0.0
    bf16 = precision == "bf16" or weights == torch.bfloat16
    assert metrics["logprob_mismatch"] == pytest.approx(0.3, abs=0.05 if bf16 else 1e-4)
    assert metrics["tis_weight_mean"] == pytest.approx(math.exp(0.3), rel=0.06)  # under the cap of 2
    assert metrics["tis_truncated_fraction"] == 0.0
    assert metrics["logprob_mismatch_tokens"] == float(batch.completion_mask[:, 1:].sum())


def test_auto_old_logprobs_follow_the_update_precision():
    policy = toy_policy("tiny-auto-old")
    for precision, expected in (("no", False), ("bf16", True)):
        cfg = RunConfig.from_dict({"update": {"mixed_precision": precision}})
        assert PPOTrainer(policy, cfg, adapter_name=f"p-{precision}").recompute_old is expected


def test_fair_threads_take_the_cores_others_leave_and_at_least_one():
    from langgraph_omar.serving.threads import fair_threads

    assert fair_threads(2, load=2.0, own_busy=2.0) == 2  # alone: the load is this process's own
    assert fair_threads(2, load=0.1, own_busy=0.0) == 2
    assert fair_threads(2, load=3.0, own_busy=2.0) == 1  # another process keeps a core busy
    assert fair_threads(2, load=8.0, own_busy=0.3) == 1  # a loaded machine: never 0
    assert fair_threads(16, load=6.0, own_busy=2.0) == 12


def test_the_self_play_loop_still_learns_on_the_bf16_path(tmp_path):
    """The toy task of test_selfplay_learns (seed 0) with bf16 prefill and a bf16 update: the reward rises and
    the recomputed old log-probabilities stay close to the recorded ones."""
    from selfplay_toy import toy_config, toy_env

    from langgraph_omar.rl.selfplay import run_selfplay

    cfg = toy_config(0, iterations=16, optimizer={"learning_rate": 1.5e-2})
    cfg = cfg.with_overrides(
        {
            "selfplay.prefill_dtype": "bfloat16",
            "update.mixed_precision": "bf16",
            "update.old_logprobs": "auto",
        }
    )
    history = run_selfplay(cfg, tmp_path / "run", toy_env(), policy=toy_policy(seed=0), progress=False)
    rewards = [h["reward_mean"] for h in history]
    assert sum(rewards[-2:]) / 2 > sum(rewards[:2]) / 2 + 0.1, rewards
    assert all(0 < h["logprob_mismatch"] < 5e-2 for h in history)
    assert all(h["tis_weight_mean"] == pytest.approx(1.0, abs=0.05) for h in history)


def _lora_model(seed: int = 0):
    model = tiny_model(seed)
    for p in model.parameters():
        p.requires_grad_(False)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)  # a trained adapter: LoRA changes the output
    return peft_model


def test_frozen_weight_casts_are_the_frozen_base_linears_made_once():
    model = _lora_model()
    casts = frozen_weight_casts(model, torch.bfloat16)
    params = dict(model.named_parameters())
    assert casts and all(params[name].dtype == torch.float32 for name in casts)
    assert all(".lora_" not in name and "lm_head" not in name and "embed" not in name for name in casts)
    assert any(name.endswith("q_proj.base_layer.weight") for name in casts)  # under a LoRA layer
    assert any(name.endswith("mlp.up_proj.weight") for name in casts)  # a plain Linear
    assert all(torch.equal(c, params[n].to(torch.bfloat16)) for n, c in casts.items())
    again = frozen_weight_casts(model, torch.bfloat16)
    assert all(again[n] is c for n, c in casts.items())  # made once
    body = model.get_base_model().model  # another root over the same weights shares the copies
    assert {id(c) for c in frozen_weight_casts(body, torch.bfloat16).values()} == {
        id(c) for c in casts.values()
    }
    assert frozen_weight_casts(model, torch.float32) == {}  # nothing to cast


def test_a_prefill_on_the_cast_copies_gives_the_logits_autocast_gives():
    model = _lora_model()
    ids = torch.randint(3, 200, (2, 9))
    with torch.no_grad(), autocast_forward(model, torch.bfloat16) as weights:
        assert weights
        expected = model(input_ids=ids).logits
        got = functional_call(model, weights, (), {"input_ids": ids}).logits
    assert expected.dtype == torch.float32  # the head stays float32
    assert torch.equal(got, expected)


def test_the_update_forward_on_cast_copies_gives_the_same_states_and_lora_gradients():
    results = []
    for cast in (None, torch.bfloat16):
        torch.manual_seed(0)
        model = _lora_model()
        module = PolicyWithValueHead(model, None, cast)
        ids = torch.randint(3, 200, (3, 40))
        ids[:, :34] = ids[0, :34]  # a shared prefix too
        mask = torch.ones_like(ids)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            states, _ = module(ids, mask, shared_prefix=34)
        states.float().pow(2).mean().backward()
        grads = [p.grad.clone() for n, p in model.named_parameters() if p.requires_grad]
        results.append((states.detach(), grads))
    (states, grads), (cast_states, cast_grads) = results
    assert torch.equal(states, cast_states)
    assert all(torch.equal(a, b) for a, b in zip(grads, cast_grads, strict=True))
