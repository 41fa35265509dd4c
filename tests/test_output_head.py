"""Training log-probabilities follow the model's own output path (issue 24 item 7): architectures whose
forward soft-caps or scales the head's output (Gemma 2, Cohere, Granite) train on the distribution the engine
sampled from, and a model whose output path the trainer cannot reproduce is refused with one line."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import (
    CohereConfig,
    CohereForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    GraniteConfig,
    GraniteForCausalLM,
    LlamaForCausalLM,
)

from langgraph_omar.errors import OmarError
from langgraph_omar.rl.advantages import EmaBaseline
from langgraph_omar.rl.batch import build_batch
from langgraph_omar.rl.config import RunConfig
from langgraph_omar.rl.logprobs import LogitTransform
from langgraph_omar.rl.output_head import logit_transform_from_config
from langgraph_omar.rl.trainer import PPOTrainer
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.serving.sampling import SamplingParams
from langgraph_omar.testing import tiny_model, tiny_tokenizer
from langgraph_omar.trajectory import Episode, Turn

# Transforms strong enough to change a tiny random model's log-probabilities (its logits are small): real
# models use a softcap of 30 (Gemma 2), a scale of 1/8 or 1/16 (Cohere, Granite) on logits of that size.
ARCHITECTURES: dict[str, tuple[Any, Any, dict[str, float], LogitTransform]] = {
    "gemma2": (
        Gemma2ForCausalLM,
        Gemma2Config,
        {"final_logit_softcapping": 0.5},
        LogitTransform(softcap=0.5),
    ),
    "cohere": (CohereForCausalLM, CohereConfig, {"logit_scale": 4.0}, LogitTransform(scale=4.0)),
    "granite": (GraniteForCausalLM, GraniteConfig, {"logits_scaling": 0.25}, LogitTransform(scale=4.0)),
}


def tiny_architecture(name: str) -> Any:
    model_class, config_class, extra, _ = ARCHITECTURES[name]
    tokenizer = tiny_tokenizer()
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        **extra,
    )
    torch.manual_seed(0)
    return model_class(config).eval()


def run_config() -> RunConfig:
    return RunConfig.from_dict(
        # float32 training numerics: the test compares them with the float32 sampling ones
        {
            "lora": {"target_modules": ["all-linear"]},
            "update": {"micro_batch_size": 4, "mixed_precision": "no"},
        }
    )


def sampled_episodes(policy: SharedPolicy, temperature: float) -> list[Episode]:
    episodes = []
    for e, prompt in enumerate(["Say hello.", "Offer a price.", "Walk away now.", "VOTE alice."]):
        ids, _ = policy.render([{"role": "user", "content": prompt}], 8)
        params = SamplingParams(temperature=temperature, max_new_tokens=8, seed=e)
        record = policy.generate(ids, params, adapter="policy")
        turn = Turn(
            "a",
            "a",
            record.text,
            record.prompt_ids,
            record.completion_ids,
            record.logprobs,
            temperature=record.temperature,
            finish_reason=record.finish_reason,
        )
        episodes.append(Episode(f"e{e}", [turn], {"a": float(e % 2)}, metadata={"group_id": "g"}))
    return episodes


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_training_logprobs_are_the_sampled_ones_for_soft_capped_and_scaled_models(architecture: str) -> None:
    policy = SharedPolicy(
        f"tiny-{architecture}",
        tiny_architecture(architecture),
        tiny_tokenizer(),
        max_wait_ms=5,
        prefill_dtype="float32",
    )
    SharedPolicy.register(policy)
    trainer = PPOTrainer(policy, run_config())
    assert trainer.logit_transform == ARCHITECTURES[architecture][3]
    episodes = sampled_episodes(policy, temperature=0.7)
    batch = build_batch(episodes, trainer.config.advantage, EmaBaseline(), 0)
    assert batch is not None
    # The trainer's log-probabilities against the full forward's tempered log-softmax, token by token.
    with torch.no_grad():
        ours, _, _ = trainer._forward(batch, trainer.module)
        logits = policy.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
        full = (
            torch.log_softmax(logits.float() / 0.7, -1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
        )
    mask = batch.completion_mask[:, 1:].bool()
    assert mask.sum() > 0
    torch.testing.assert_close(ours[mask], full[mask], atol=1e-4, rtol=1e-4)
    # ... and so against the engine's recorded ones: the PPO ratio starts at 1.
    metrics = trainer.update(batch, episodes)
    assert metrics["logprob_mismatch_tokens"] > 0 and metrics["logprob_mismatch"] < 1e-4


class _ScaledLlama(LlamaForCausalLM):  # an architecture whose output path the trainer does not know
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        output = super().forward(*args, **kwargs)
        output.logits = output.logits * 3.0
        return output


def test_a_model_whose_output_path_cannot_be_reproduced_is_refused_with_one_line() -> None:
    model = tiny_model(0)
    unknown = _ScaledLlama(model.config).eval()
    unknown.load_state_dict(model.state_dict())
    policy = SharedPolicy("tiny-scaled", unknown, tiny_tokenizer(), max_wait_ms=5)
    with pytest.raises(
        OmarError, match=r"'tiny-scaled' \(llama\): its logits are not lm_head of its last"
    ) as error:
        PPOTrainer(policy, run_config())
    assert "\n" not in str(error.value)


def test_a_config_that_names_an_impossible_transform_is_refused_with_one_line() -> None:
    config = GraniteConfig(logits_scaling=0.0)
    with pytest.raises(OmarError, match="granite model: cannot read its output logit transform"):
        logit_transform_from_config(config)
    assert logit_transform_from_config(Gemma2Config(final_logit_softcapping=None)).is_identity
    assert logit_transform_from_config(tiny_model(0).config).is_identity
