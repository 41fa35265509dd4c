"""Token log-probabilities without a full (batch, sequence, vocabulary) float tensor.

The naive `torch.log_softmax(hidden @ W.T / T, -1).gather(...)` holds the logits, their float copy and the
log-softmax (and, for backward, more of the same) for every position at once: with a 50k vocabulary and 4k
positions that is gigabytes. Here the positions are processed in chunks: each chunk's logits are computed,
reduced in float32 (fused log-softmax kernels upcast on the fly) to the target's log-probability [and the
entropy] and dropped. Backward is written by hand: with a trainable head it recomputes each chunk's logits;
with a frozen head (LoRA) the gradient w.r.t. the hidden states is linear in the upstream gradient per
position, so the forward pass stores one (H,) row per position and backward is a multiply. Either way no
chunk's logits outlive their iteration, and nothing of size (positions, vocabulary) is saved for backward.

Results are float32 (float64 for float64 inputs). Matmuls run in the inputs' common dtype, or in the autocast
dtype when autocast is on, like the naive version would. Double backward is not supported.

A model whose forward transforms its head's output before the softmax (Gemma 2's soft-capping, Cohere's and
Granite's scaling) samples from the transformed logits: pass its `LogitTransform`, applied to each chunk in
float32, so that the training log-probabilities are those of the distribution that was sampled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable


@dataclass(frozen=True)
class LogitTransform:
    """What a model's forward does to its head's output l = hidden @ W.T + b before the softmax (sampling's
    temperature divides the result): z = softcap * tanh(scale * l / softcap), or z = scale * l without a cap.
    The identity (scale 1, no cap) is the plain `hidden @ W.T + b` of most models."""

    scale: float = 1.0
    softcap: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"logit scale must be a finite number > 0, got {self.scale}")
        if self.softcap is not None and not (math.isfinite(self.softcap) and self.softcap > 0):
            raise ValueError(f"logit softcap must be a finite number > 0, got {self.softcap}")

    @property
    def is_identity(self) -> bool:
        return self.scale == 1.0 and self.softcap is None

    def apply(self, logits: Tensor) -> Tensor:
        """z for a tensor of head outputs l (any shape), out of place, in the input's dtype."""
        out = logits * self.scale if self.scale != 1.0 else logits
        if self.softcap is not None:
            out = torch.tanh(out / self.softcap) * self.softcap
        return out


IDENTITY = LogitTransform()


def selective_log_softmax(logits: Tensor, index: Tensor, chunk_size: int = 512) -> Tensor:
    """log_softmax(logits, -1) gathered at index, chunk by chunk. logits (..., V), index (...) -> (...).

    Works for bf16/fp16 logits (each chunk is reduced in float32); differentiable w.r.t. logits, and backward
    keeps one float per position, not a float copy of the logits.
    """
    if logits.shape[:-1] != index.shape:
        raise ValueError(
            f"index shape {tuple(index.shape)} must equal logits shape without the vocabulary "
            f"dimension {tuple(logits.shape[:-1])}"
        )
    _check_chunk_size(chunk_size)
    _check_targets(index, logits.shape[-1])
    flat_logits = logits.reshape(-1, logits.shape[-1])
    result = _SelectiveLogSoftmax.apply(flat_logits, index.reshape(-1).long(), chunk_size)
    return result.view(index.shape)


def entropy_from_logits(logits: Tensor, chunk_size: int = 512) -> Tensor:
    """Entropy of softmax(logits) over the last dimension, chunk by chunk in float32. (..., V) -> (...).

    Differentiable through autograd (each chunk's float32 copy is kept for backward); as a metric, call it
    under torch.no_grad(), or get entropies from `token_logprobs_and_entropy_from_hidden`.
    """
    _check_chunk_size(chunk_size)
    flat = logits.reshape(-1, logits.shape[-1])
    pieces = []
    for start in range(0, flat.shape[0], chunk_size):
        chunk = flat[start : start + chunk_size].to(_reduction_dtype(flat.dtype))
        log_probs = torch.log_softmax(chunk, dim=-1)
        pieces.append(-(log_probs.exp() * log_probs).sum(-1))
    if not pieces:
        return flat.new_zeros(logits.shape[:-1], dtype=_reduction_dtype(flat.dtype))
    return torch.cat(pieces).view(logits.shape[:-1])


def token_logprobs_from_hidden(
    hidden: Tensor,
    lm_head_weight: Tensor,
    targets: Tensor,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    lm_head_bias: Tensor | None = None,
    logit_transform: LogitTransform = IDENTITY,
) -> Tensor:
    """log_softmax(transform(hidden @ W.T + b) / temperature)[target] per position, never materialising
    (B, T, V).

    hidden (B, T, H) (any leading shape), lm_head_weight (V, H), lm_head_bias (V,) or None, targets (B, T)
    int ids in [0, V). Returns (B, T). Differentiable w.r.t. hidden, weight and bias.
    """
    logprobs, _ = _logprobs_from_hidden(
        hidden, lm_head_weight, targets, temperature, chunk_size, lm_head_bias, 0, logit_transform
    )
    return logprobs


def token_logprobs_and_entropy_from_hidden(
    hidden: Tensor,
    lm_head_weight: Tensor,
    targets: Tensor,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    lm_head_bias: Tensor | None = None,
    entropy_grad: bool = False,
    logit_transform: LogitTransform = IDENTITY,
) -> tuple[Tensor, Tensor]:
    """`token_logprobs_from_hidden` plus the entropy of each position's distribution: ((B, T), (B, T)).

    The entropy is a metric by default (no gradient, almost no cost); entropy_grad=True makes it
    differentiable too (for an entropy bonus), at no extra memory.
    """
    mode = _ENTROPY_GRAD if entropy_grad else _ENTROPY_METRIC
    logprobs, entropy = _logprobs_from_hidden(
        hidden, lm_head_weight, targets, temperature, chunk_size, lm_head_bias, mode, logit_transform
    )
    assert entropy is not None
    return logprobs, entropy


_NO_ENTROPY, _ENTROPY_METRIC, _ENTROPY_GRAD = 0, 1, 2


def _logprobs_from_hidden(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    temperature: float,
    chunk_size: int,
    bias: Tensor | None,
    entropy_mode: int,
    transform: LogitTransform,
) -> tuple[Tensor, Tensor | None]:
    if weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"hidden (..., H) and lm_head_weight (V, H) disagree: {tuple(hidden.shape)} and "
            f"{tuple(weight.shape)}"
        )
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(
            f"targets shape {tuple(targets.shape)} must equal hidden shape without the hidden "
            f"dimension {tuple(hidden.shape[:-1])}"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"lm_head_bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    _check_chunk_size(chunk_size)
    _check_targets(targets, weight.shape[0])
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        compute_dtype = torch.get_autocast_dtype(device_type)
    else:
        compute_dtype = torch.promote_types(hidden.dtype, weight.dtype)
        if bias is not None:
            compute_dtype = torch.promote_types(compute_dtype, bias.dtype)
    # With a frozen head (LoRA) only hidden needs a gradient, and that gradient is linear in the upstream
    # gradient per position: precompute it in the forward pass instead of recomputing logits in backward.
    head_trainable = weight.requires_grad or (bias is not None and bias.requires_grad)
    precompute = torch.is_grad_enabled() and hidden.requires_grad and not head_trainable
    logprobs, entropy = _LinearLogSoftmax.apply(
        hidden.reshape(-1, hidden.shape[-1]),
        weight,
        bias,
        targets.reshape(-1).long(),
        float(temperature),
        chunk_size,
        entropy_mode,
        compute_dtype,
        precompute,
        transform,
    )
    return logprobs.view(targets.shape), entropy.view(targets.shape) if entropy_mode != _NO_ENTROPY else None


class _LinearLogSoftmax(torch.autograd.Function):
    """(N, H) hidden -> (N,) target log-probabilities and (N,) entropies, chunk by chunk over N.

    l = hidden @ W.T + b; z = transform(l) / temperature; log p = log_softmax(z); H = -sum_j p_j log p_j.
    d log p[target] / d z_j = 1[j = target] - p_j;   d H / d z_j = -p_j (log p_j + H);
    d z_j / d h = g_j W_j with g_j = d z_j / d l_j (`_logit_derivative`; 1 / T for the identity).
    """

    @staticmethod
    def forward(
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        targets: Tensor,
        temperature: float,
        chunk_size: int,
        entropy_mode: int,
        compute_dtype: torch.dtype,
        precompute: bool,
        transform: LogitTransform,
    ) -> tuple[Tensor, Tensor]:
        reduction_dtype = _reduction_dtype(compute_dtype)
        num_positions = hidden.shape[0]
        logprobs = hidden.new_empty(num_positions, dtype=reduction_dtype)
        entropies = torch.empty_like(logprobs) if entropy_mode != _NO_ENTROPY else logprobs.new_empty(0)
        # Precomputed d logprob / d hidden and d entropy / d hidden: one (H,) row per position.
        logprob_hidden_grad = hidden.new_empty(hidden.shape, dtype=reduction_dtype) if precompute else None
        entropy_hidden_grad = (
            torch.empty_like(logprob_hidden_grad)
            if logprob_hidden_grad is not None and entropy_mode == _ENTROPY_GRAD
            else None
        )
        with torch.autocast(hidden.device.type, enabled=False):
            head = weight.to(compute_dtype)
            for start in range(0, num_positions, chunk_size):
                end = min(start + chunk_size, num_positions)
                chunk_targets = targets[start:end, None]
                logits = _chunk_logits(hidden[start:end], head, bias, temperature, compute_dtype, transform)
                derivative = _logit_derivative(logits, transform, temperature) if precompute else 1.0
                log_probs = torch.log_softmax(logits, dim=-1, dtype=reduction_dtype)  # fused upcast
                logprobs[start:end] = log_probs.gather(-1, chunk_targets).squeeze(-1)
                del logits
                if entropy_mode == _NO_ENTROPY and not precompute:
                    continue
                # Without entropy, log_probs is not needed again: exponentiate in place.
                probs = log_probs.exp() if entropy_mode != _NO_ENTROPY else log_probs.exp_()
                if entropy_mode != _NO_ENTROPY:
                    plogp = log_probs.mul_(probs)  # p log p, in log_probs' buffer
                    entropies[start:end] = -plogp.sum(-1)
                if logprob_hidden_grad is not None:
                    # rows sum_j p_j g_j W_j and g_target W_target (g: a number, or one per logit)
                    expected_row = _weighted_rows(probs, derivative, head, reduction_dtype)
                    target_row = head[chunk_targets.squeeze(-1)].to(reduction_dtype)
                    if isinstance(derivative, Tensor):
                        target_row.mul_(derivative.gather(-1, chunk_targets))
                    else:
                        target_row.mul_(derivative)
                    logprob_hidden_grad[start:end] = target_row - expected_row
                    if entropy_hidden_grad is not None:
                        weighted_row = _weighted_rows(plogp, derivative, head, reduction_dtype)
                        row = weighted_row.add_(entropies[start:end, None] * expected_row)
                        entropy_hidden_grad[start:end] = row.neg_()
        if entropy_mode != _ENTROPY_GRAD:
            ctx.mark_non_differentiable(entropies)
        ctx.save_for_backward(hidden, weight, bias, targets, entropies)
        ctx.precomputed = (logprob_hidden_grad, entropy_hidden_grad)
        ctx.config = (temperature, chunk_size, entropy_mode, compute_dtype, transform)
        ctx.set_materialize_grads(False)
        return logprobs, entropies

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_logprobs: Tensor | None, grad_entropies: Tensor | None) -> tuple[Any, ...]:
        hidden, weight, bias, targets, entropies = ctx.saved_tensors
        temperature, chunk_size, entropy_mode, compute_dtype, transform = ctx.config
        logprob_hidden_grad, entropy_hidden_grad = ctx.precomputed
        no_grads: tuple[None, ...] = (None,) * 10
        if entropy_mode != _ENTROPY_GRAD:
            grad_entropies = None
        if grad_logprobs is None and grad_entropies is None:
            return no_grads
        reduction_dtype = _reduction_dtype(compute_dtype)
        if logprob_hidden_grad is not None:
            precomputed_grad = torch.zeros_like(logprob_hidden_grad)
            if grad_logprobs is not None:
                precomputed_grad += grad_logprobs[:, None].to(reduction_dtype) * logprob_hidden_grad
            if grad_entropies is not None:
                precomputed_grad += grad_entropies[:, None].to(reduction_dtype) * entropy_hidden_grad
            return (precomputed_grad.to(hidden.dtype), *no_grads[1:])

        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.empty_like(hidden) if needs_hidden else None
        grad_weight = (
            torch.zeros(weight.shape, dtype=reduction_dtype, device=weight.device) if needs_weight else None
        )
        grad_bias = (
            torch.zeros(weight.shape[0], dtype=reduction_dtype, device=weight.device) if needs_bias else None
        )
        with torch.autocast(hidden.device.type, enabled=False):
            head = weight.to(compute_dtype)
            for start in range(0, hidden.shape[0], chunk_size):
                end = min(start + chunk_size, hidden.shape[0])
                chunk_hidden = hidden[start:end].to(compute_dtype)
                logits = _chunk_logits(chunk_hidden, head, bias, temperature, compute_dtype, transform)
                derivative = _logit_derivative(logits, transform, temperature)
                # The gradient w.r.t. z, built in place in at most two (n, V) buffers (three with a softcap).
                if grad_entropies is not None:
                    log_probs = torch.log_softmax(logits, dim=-1, dtype=reduction_dtype)
                    del logits
                    probs = log_probs.exp()
                    entropy_grad = grad_entropies[start:end, None].to(reduction_dtype)
                    grad_logits = log_probs.add_(entropies[start:end, None]).mul_(probs).mul_(-entropy_grad)
                    if grad_logprobs is not None:
                        grad_logits.sub_(probs.mul_(grad_logprobs[start:end, None].to(reduction_dtype)))
                    del probs
                else:
                    assert grad_logprobs is not None
                    grad_logits = torch.softmax(logits, dim=-1, dtype=reduction_dtype)
                    del logits
                    grad_logits.mul_(-grad_logprobs[start:end, None].to(reduction_dtype))
                if grad_logprobs is not None:
                    logprob_grad = grad_logprobs[start:end, None].to(reduction_dtype)
                    grad_logits.scatter_add_(-1, targets[start:end, None], logprob_grad)
                if isinstance(derivative, Tensor) or derivative != 1.0:
                    grad_logits.mul_(derivative)  # w.r.t. l = hidden @ W.T + b
                del derivative
                grad_logits_c = grad_logits.to(compute_dtype)
                if grad_hidden is not None:
                    grad_hidden[start:end] = (grad_logits_c @ head).to(hidden.dtype)
                if grad_weight is not None:
                    grad_weight += (grad_logits_c.T @ chunk_hidden).to(reduction_dtype)
                if grad_bias is not None:
                    grad_bias += grad_logits.sum(0)
                del grad_logits, grad_logits_c
        return (
            grad_hidden,
            None if grad_weight is None else grad_weight.to(weight.dtype),
            None if grad_bias is None else grad_bias.to(bias.dtype),
            *no_grads[3:],
        )


class _SelectiveLogSoftmax(torch.autograd.Function):
    """(N, V) logits, (N,) index -> (N,) log-probabilities; backward recomputes each chunk's softmax."""

    @staticmethod
    def forward(ctx: FunctionCtx, logits: Tensor, index: Tensor, chunk_size: int) -> Tensor:
        reduction_dtype = _reduction_dtype(logits.dtype)
        result = logits.new_empty(logits.shape[0], dtype=reduction_dtype)
        for start in range(0, logits.shape[0], chunk_size):
            end = start + chunk_size
            log_probs = torch.log_softmax(logits[start:end], dim=-1, dtype=reduction_dtype)
            result[start:end] = log_probs.gather(-1, index[start:end, None]).squeeze(-1)
        ctx.save_for_backward(logits, index)
        ctx.chunk_size = chunk_size  # type: ignore[attr-defined]
        return result

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, None, None]:
        logits, index = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        grad_logits = torch.empty_like(logits)
        reduction_dtype = _reduction_dtype(logits.dtype)
        for start in range(0, logits.shape[0], ctx.chunk_size):
            end = start + ctx.chunk_size
            chunk_grad = grad_output[start:end, None].to(reduction_dtype)
            chunk = torch.softmax(logits[start:end], dim=-1, dtype=reduction_dtype).mul_(-chunk_grad)
            grad_logits[start:end] = chunk.scatter_add_(-1, index[start:end, None], chunk_grad)
        return grad_logits, None, None


def _chunk_logits(
    hidden: Tensor,
    head: Tensor,
    bias: Tensor | None,
    temperature: float,
    compute_dtype: torch.dtype,
    transform: LogitTransform,
) -> Tensor:
    """(n, H) -> (n, V) transform(logits) / temperature: in the compute dtype at temperature 1 without a
    transform (the softmax kernels upcast on the fly), else transformed and divided in the reduction dtype so
    that no extra rounding happens."""
    logits = hidden.to(compute_dtype) @ head.T
    if bias is not None:
        logits = logits + bias.to(compute_dtype)
    if temperature == 1.0 and transform.is_identity:
        return logits
    logits = logits.to(_reduction_dtype(compute_dtype))  # a fresh tensor: safe in place
    if transform.scale != 1.0:
        logits.mul_(transform.scale)
    if transform.softcap is not None:
        logits.div_(transform.softcap).tanh_().mul_(transform.softcap)
    return logits.div_(temperature) if temperature != 1.0 else logits


def _logit_derivative(z: Tensor, transform: LogitTransform, temperature: float) -> Tensor | float:
    """d z / d l for z = transform(l) / temperature, given z (n, V): scale / T, or with a softcap c,
    scale (1 - tanh^2) / T per logit (n, V), where tanh = z T / c."""
    factor = transform.scale / temperature
    if transform.softcap is None:
        return factor
    tanh = z.to(_reduction_dtype(z.dtype)) * (temperature / transform.softcap)
    return tanh.square_().neg_().add_(1.0).mul_(factor)


def _weighted_rows(
    weights: Tensor, derivative: Tensor | float, head: Tensor, reduction_dtype: torch.dtype
) -> Tensor:
    """(n, V) weights w, d z / d l g (a number or (n, V)), head (V, H) -> (n, H) rows sum_j w_j g_j W_j."""
    if isinstance(derivative, Tensor):
        return ((weights * derivative).to(head.dtype) @ head).to(reduction_dtype)
    return (weights.to(head.dtype) @ head).to(reduction_dtype).mul_(derivative)


def _reduction_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def _check_targets(targets: Tensor, vocab_size: int) -> None:
    if targets.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"target ids must be int64 or int32, got {targets.dtype}")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= vocab_size):
        raise ValueError(
            f"target ids must be in [0, {vocab_size}), got min {int(targets.min())} max {int(targets.max())}"
        )
