"""The model's own output path, reproduced for training.

The engine samples from the full forward's logits; the trainer computes log-probabilities from the body's
last hidden states and the head's weight (`rl/logprobs.py`). Some architectures transform the head's output
first (Gemma 2 soft-caps it, Cohere and Granite scale it): `model_logit_transform` reads that transform from
the config of the model types whose forward does so, then checks on a few tokens that
`transform(hidden @ W.T + b)` gives the forward's log-softmax, and refuses with one line a model whose output
path it cannot reproduce, before any episode is played: its PPO ratios would be biased from the first step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from langgraph_omar.errors import OmarError, first_line
from langgraph_omar.rl.logprobs import LogitTransform


def _softcap(config: Any) -> LogitTransform:
    return LogitTransform(softcap=config.final_logit_softcapping)


def _scale(config: Any) -> LogitTransform:
    return LogitTransform(scale=config.logit_scale)


def _divide_by_scaling(config: Any) -> LogitTransform:
    return LogitTransform(scale=1.0 / config.logits_scaling)


# model_type -> the transform its CausalLM forward applies to lm_head(hidden), as read in the transformers
# source: `logits = softcap * tanh(logits / softcap)`, `logits * logit_scale`, `logits / logits_scaling`
# (MiniCPM3 divides the hidden states before its bias-free head: the same), HyperCLOVA X multiplies by its
# `logits_scaling`, Falcon-H1 by `lm_head_multiplier`.
_TRANSFORMS: dict[str, Callable[[Any], LogitTransform]] = {
    **dict.fromkeys(("gemma2", "gemma3_text", "vaultgemma", "nanochat"), _softcap),
    **dict.fromkeys(("cohere", "cohere2", "cohere2_moe"), _scale),
    **dict.fromkeys(
        ("granite", "granitemoe", "granitemoeshared", "granitemoehybrid", "granite_swa", "minicpm3"),
        _divide_by_scaling,
    ),
    "hyperclovax": lambda config: LogitTransform(scale=config.logits_scaling),
    "falcon_h1": lambda config: LogitTransform(scale=config.lm_head_multiplier),
}

PROBE_TOKENS = 8
# Largest |difference| of the probe's log-probabilities, relative to the largest |logit|: float32 rounding,
# or a half-precision forward's (bf16 rounds each logit to ~0.4%).
_TOLERANCE = {torch.float16: 2e-2, torch.bfloat16: 2e-2}
_FLOAT_TOLERANCE = 1e-4


def logit_transform_from_config(config: Any) -> LogitTransform:
    """The transform a model of this config's type applies to its head's output (the identity for most)."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    model_type = str(getattr(text_config, "model_type", ""))
    reader = _TRANSFORMS.get(model_type)
    if reader is None:
        return LogitTransform()
    try:
        return reader(text_config)
    except (AttributeError, TypeError, ValueError, ZeroDivisionError) as error:
        raise OmarError(
            f"{model_type} model: cannot read its output logit transform from its config ({error})"
        ) from None


@torch.no_grad()
def model_logit_transform(causal_lm: Any, body: Any, name: str) -> LogitTransform:
    """The transform of `causal_lm`'s output path, checked: `causal_lm(ids).logits` must match
    transform(body(ids).last_hidden_state @ W.T + b) in log-softmax on a few tokens. Run in eval mode.

    Raises OmarError (one line) when it does not: the trainer's log-probabilities would not be those the
    engine sampled from."""
    transform = logit_transform_from_config(causal_lm.config)
    head = causal_lm.get_output_embeddings()
    weight = getattr(head, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise OmarError(
            f"model {name!r} has no linear output head (get_output_embeddings()); omar cannot train it"
        )
    bias = getattr(head, "bias", None)
    vocab = int(weight.shape[0])
    ids = torch.linspace(0, vocab - 1, min(PROBE_TOKENS, vocab)).long()[None].to(weight.device)
    mask = torch.ones_like(ids)
    try:
        logits = causal_lm(input_ids=ids, attention_mask=mask, use_cache=False).logits
        hidden = body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    except Exception as error:  # an architecture whose forward needs more than token ids
        raise OmarError(
            f"model {name!r}: its forward on a probe of token ids failed ({first_line(error, with_type=True)}); "
            "omar cannot train it"
        ) from None
    head_out = hidden.double() @ weight.double().T + (0 if bias is None else bias.double())
    ours = torch.log_softmax(transform.apply(head_out), -1)
    theirs = torch.log_softmax(logits[..., :vocab].double(), -1)
    gap = float((ours - theirs).abs().max())
    scale = max(1.0, float(logits.abs().max()))
    if not gap <= _TOLERANCE.get(logits.dtype, _FLOAT_TOLERANCE) * scale:
        kind = str(getattr(causal_lm.config, "model_type", type(causal_lm).__name__))
        raise OmarError(
            f"model {name!r} ({kind}): its logits are not {_describe(transform)} of its last hidden states "
            f"(log-probabilities differ by up to {gap:.3g}); training would not compute the probabilities it "
            "sampled from, so omar cannot train this architecture"
        )
    return transform


def _describe(transform: LogitTransform) -> str:
    if transform.is_identity:
        return "lm_head"
    parts = [f"scale {transform.scale:g}"] if transform.scale != 1.0 else []
    if transform.softcap is not None:
        parts.append(f"softcap {transform.softcap:g}")
    return f"lm_head with {' and '.join(parts)}"
