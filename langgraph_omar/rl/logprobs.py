"""Token log-probabilities without a full (batch, sequence, vocabulary) float tensor.

The naive `torch.log_softmax(hidden @ W.T / T, -1).gather(...)` holds the logits, their float copy and the
log-softmax (and, for backward, more of the same) for every position at once: with a 50k vocabulary and 4k
positions that is gigabytes. Here the positions are processed in chunks: each chunk's logits are computed,
reduced to (log-probability of the target, logsumexp[, entropy]) in float32, and dropped. Backward is written
by hand and recomputes each chunk's logits, so no chunk's logits outlive its iteration in either pass:
the only tensors saved for backward are the inputs and one float per position.

Results are float32 (float64 for float64 inputs). Matmuls run in the inputs' common dtype, or in the autocast
dtype when autocast is on, like the naive version would. Double backward is not supported.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable


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
) -> Tensor:
    """log_softmax((hidden @ W.T + b) / temperature)[target] per position, never materialising (B, T, V).

    hidden (B, T, H) (any leading shape), lm_head_weight (V, H), lm_head_bias (V,) or None, targets (B, T)
    long ids in [0, V). Returns (B, T). Differentiable w.r.t. hidden, weight and bias; a frozen weight
    (requires_grad False, as with LoRA) skips its gradient matmul.
    """
    logprobs, _ = _logprobs_from_hidden(
        hidden, lm_head_weight, targets, temperature, chunk_size, lm_head_bias, False
    )
    return logprobs


def token_logprobs_and_entropy_from_hidden(
    hidden: Tensor,
    lm_head_weight: Tensor,
    targets: Tensor,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    lm_head_bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """`token_logprobs_from_hidden` plus the entropy of each position's distribution: ((B, T), (B, T)).

    Both outputs are differentiable (an entropy bonus can be backpropagated) at no extra memory.
    """
    logprobs, entropy = _logprobs_from_hidden(
        hidden, lm_head_weight, targets, temperature, chunk_size, lm_head_bias, True
    )
    assert entropy is not None
    return logprobs, entropy


def _logprobs_from_hidden(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    temperature: float,
    chunk_size: int,
    bias: Tensor | None,
    with_entropy: bool,
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
    outputs = _LinearLogSoftmax.apply(
        hidden.reshape(-1, hidden.shape[-1]),
        weight,
        bias,
        targets.reshape(-1).long(),
        float(temperature),
        chunk_size,
        with_entropy,
        compute_dtype,
    )
    logprobs, entropy = outputs
    return logprobs.view(targets.shape), entropy.view(targets.shape) if with_entropy else None


class _LinearLogSoftmax(torch.autograd.Function):
    """(N, H) hidden -> (N,) target log-probabilities and (N,) entropies, chunk by chunk over N."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        targets: Tensor,
        temperature: float,
        chunk_size: int,
        with_entropy: bool,
        compute_dtype: torch.dtype,
    ) -> tuple[Tensor, Tensor]:
        reduction_dtype = _reduction_dtype(compute_dtype)
        num_positions = hidden.shape[0]
        logprobs = hidden.new_empty(num_positions, dtype=reduction_dtype)
        logsumexps = torch.empty_like(logprobs)
        entropies = torch.empty_like(logprobs) if with_entropy else logprobs.new_empty(0)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, num_positions, chunk_size):
                end = min(start + chunk_size, num_positions)
                logits = _chunk_logits(hidden[start:end], weight, bias, temperature, compute_dtype)
                logsumexp = torch.logsumexp(logits, dim=-1)
                logsumexps[start:end] = logsumexp
                logprobs[start:end] = logits.gather(-1, targets[start:end, None]).squeeze(-1) - logsumexp
                if with_entropy:
                    # H = logsumexp - sum_j p_j z_j
                    probs = (logits - logsumexp[:, None]).exp_()
                    entropies[start:end] = logsumexp - probs.mul_(logits).sum(-1)
        ctx.save_for_backward(hidden, weight, bias, targets, logsumexps, entropies)
        ctx.config = (temperature, chunk_size, with_entropy, compute_dtype)
        ctx.set_materialize_grads(False)
        return logprobs, entropies

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_logprobs: Tensor | None, grad_entropies: Tensor | None) -> tuple[Any, ...]:
        hidden, weight, bias, targets, logsumexps, entropies = ctx.saved_tensors
        temperature, chunk_size, with_entropy, compute_dtype = ctx.config
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        if not with_entropy:
            grad_entropies = None
        if grad_logprobs is None and grad_entropies is None:
            return (None,) * 8
        reduction_dtype = logsumexps.dtype
        grad_hidden = torch.empty_like(hidden) if needs_hidden else None
        grad_weight = (
            torch.zeros(weight.shape, dtype=reduction_dtype, device=weight.device) if needs_weight else None
        )
        grad_bias = (
            torch.zeros(weight.shape[0], dtype=reduction_dtype, device=weight.device) if needs_bias else None
        )
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], chunk_size):
                end = min(start + chunk_size, hidden.shape[0])
                logits = _chunk_logits(hidden[start:end], weight, bias, temperature, compute_dtype)
                # Gradient w.r.t. the tempered logits z, built in place in two (n, V) buffers:
                # d log p[target] / d z_j = 1[j = target] - p_j;  d H / d z_j = -p_j (log p_j + H).
                log_probs = logits.sub_(logsumexps[start:end, None])
                probs = log_probs.exp()
                if grad_entropies is not None:
                    entropy_grad = grad_entropies[start:end, None].to(reduction_dtype)
                    grad_logits = log_probs.add_(entropies[start:end, None]).mul_(probs).mul_(-entropy_grad)
                    if grad_logprobs is not None:
                        grad_logits.sub_(probs.mul_(grad_logprobs[start:end, None].to(reduction_dtype)))
                else:
                    assert grad_logprobs is not None
                    grad_logits = probs.mul_(-grad_logprobs[start:end, None].to(reduction_dtype))
                if grad_logprobs is not None:
                    logprob_grad = grad_logprobs[start:end, None].to(reduction_dtype)
                    grad_logits.scatter_add_(-1, targets[start:end, None], logprob_grad)
                grad_logits.div_(temperature)  # z = raw logits / temperature
                del logits, log_probs, probs
                if grad_hidden is not None:
                    grad_hidden[start:end] = (grad_logits.to(compute_dtype) @ weight.to(compute_dtype)).to(
                        hidden.dtype
                    )
                if grad_weight is not None:
                    grad_weight += (grad_logits.T.to(compute_dtype) @ hidden[start:end].to(compute_dtype)).to(
                        reduction_dtype
                    )
                if grad_bias is not None:
                    grad_bias += grad_logits.sum(0)
        return (
            grad_hidden,
            None if grad_weight is None else grad_weight.to(weight.dtype),
            None if grad_bias is None else grad_bias.to(bias.dtype),
            None,
            None,
            None,
            None,
            None,
        )


class _SelectiveLogSoftmax(torch.autograd.Function):
    """(N, V) logits, (N,) index -> (N,) log-probabilities; saves one logsumexp per row for backward."""

    @staticmethod
    def forward(ctx: FunctionCtx, logits: Tensor, index: Tensor, chunk_size: int) -> Tensor:
        reduction_dtype = _reduction_dtype(logits.dtype)
        result = logits.new_empty(logits.shape[0], dtype=reduction_dtype)
        logsumexps = torch.empty_like(result)
        for start in range(0, logits.shape[0], chunk_size):
            chunk = logits[start : start + chunk_size].to(reduction_dtype)
            logsumexp = torch.logsumexp(chunk, dim=-1)
            logsumexps[start : start + chunk_size] = logsumexp
            result[start : start + chunk_size] = (
                chunk.gather(-1, index[start : start + chunk_size, None]).squeeze(-1) - logsumexp
            )
        ctx.save_for_backward(logits, index, logsumexps)
        ctx.chunk_size = chunk_size  # type: ignore[attr-defined]
        return result

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, None, None]:
        logits, index, logsumexps = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        grad_logits = torch.empty_like(logits)
        for start in range(0, logits.shape[0], ctx.chunk_size):
            end = start + ctx.chunk_size
            probs = torch.exp(logits[start:end].to(logsumexps.dtype) - logsumexps[start:end, None])
            chunk_grad = grad_output[start:end, None].to(logsumexps.dtype)
            chunk = -probs * chunk_grad
            chunk.scatter_add_(-1, index[start:end, None], chunk_grad)
            grad_logits[start:end] = chunk
        return grad_logits, None, None


def _chunk_logits(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, temperature: float, compute_dtype: torch.dtype
) -> Tensor:
    """(n, H) -> (n, V) logits / temperature in the reduction dtype (float32, or float64)."""
    logits = hidden.to(compute_dtype) @ weight.to(compute_dtype).T
    if bias is not None:
        logits = logits + bias.to(compute_dtype)
    logits = logits.to(_reduction_dtype(compute_dtype))  # a fresh tensor either way: safe to edit in place
    return logits.div_(temperature) if temperature != 1.0 else logits


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
