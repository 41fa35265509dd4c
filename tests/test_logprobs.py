from __future__ import annotations

import pytest
import torch

from langgraph_omar.rl.logprobs import (
    LogitTransform,
    entropy_from_logits,
    selective_log_softmax,
    token_logprobs_and_entropy_from_hidden,
    token_logprobs_from_hidden,
)

BATCH, SEQ, HIDDEN, VOCAB = 3, 5, 8, 37  # 15 positions: chunk sizes 4 and 7 leave a ragged last chunk


def _inputs(dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(BATCH, SEQ, HIDDEN, generator=generator, dtype=dtype).requires_grad_(True)
    weight = torch.randn(VOCAB, HIDDEN, generator=generator, dtype=dtype).requires_grad_(True)
    bias = torch.randn(VOCAB, generator=generator, dtype=dtype).requires_grad_(True)
    targets = torch.randint(0, VOCAB, (BATCH, SEQ), generator=generator)
    return hidden, weight, bias, targets


def _naive(hidden, weight, bias, targets, temperature):  # type: ignore[no-untyped-def]
    logits = (hidden @ weight.T + (0 if bias is None else bias)).float() / temperature
    log_probs = torch.log_softmax(logits, -1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1), entropy


@pytest.mark.parametrize("chunk_size", [1, 7, 1024])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("frozen_head", [False, True])  # frozen: the precomputed-gradient path
def test_logprobs_match_naive_forward_and_gradients(
    chunk_size: int, temperature: float, use_bias: bool, frozen_head: bool
) -> None:
    hidden, weight, bias, targets = _inputs()
    if frozen_head:
        weight, bias = weight.detach(), bias.detach()
    lm_bias = bias if use_bias else None
    wrt = [hidden] if frozen_head else [hidden, weight, *([bias] if use_bias else [])]
    ours = token_logprobs_from_hidden(hidden, weight, targets, temperature, chunk_size, lm_bias)
    upstream = torch.randn(BATCH, SEQ, generator=torch.Generator().manual_seed(1))
    our_grads = torch.autograd.grad((ours * upstream).sum(), wrt)

    expected, _ = _naive(hidden, weight, lm_bias, targets, temperature)
    naive_grads = torch.autograd.grad((expected * upstream).sum(), wrt)
    assert ours.shape == (BATCH, SEQ) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    for mine, reference in zip(our_grads, naive_grads, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk_size", [4, 1024])
@pytest.mark.parametrize("frozen_head", [False, True])
def test_logprobs_and_entropy_match_naive_forward_and_gradients(chunk_size: int, frozen_head: bool) -> None:
    hidden, weight, bias, targets = _inputs(seed=3)
    if frozen_head:
        weight, bias = weight.detach(), bias.detach()
    wrt = [hidden] if frozen_head else [hidden, weight, bias]

    def ours_fn() -> tuple[torch.Tensor, torch.Tensor]:
        return token_logprobs_and_entropy_from_hidden(
            hidden, weight, targets, 0.8, chunk_size, bias, entropy_grad=True
        )

    logprobs, entropy = ours_fn()
    expected_logprobs, expected_entropy = _naive(hidden, weight, bias, targets, 0.8)
    torch.testing.assert_close(logprobs, expected_logprobs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropy, expected_entropy, atol=1e-5, rtol=1e-5)
    # A loss mixing both outputs exercises both gradient paths at once.
    ours = torch.autograd.grad((logprobs.sum() - 0.3 * (entropy**2).sum()), wrt)
    naive = torch.autograd.grad((expected_logprobs.sum() - 0.3 * (expected_entropy**2).sum()), wrt)
    for mine, reference in zip(ours, naive, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-5, rtol=1e-5)
    # Entropy alone (the log-probabilities unused): only the entropy path feeds the gradient.
    _, entropy_only = ours_fn()
    (grad,) = torch.autograd.grad(entropy_only.sum(), [hidden])
    _, fresh_expected_entropy = _naive(hidden, weight, bias, targets, 0.8)
    (naive_grad,) = torch.autograd.grad(fresh_expected_entropy.sum(), [hidden])
    torch.testing.assert_close(grad, naive_grad, atol=1e-5, rtol=1e-5)


def test_gradcheck_float64() -> None:
    generator = torch.Generator().manual_seed(5)
    hidden = torch.randn(2, 3, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, generator=generator, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 6, (2, 3), generator=generator)

    def function(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return token_logprobs_and_entropy_from_hidden(h, w, targets, 1.3, 4, b, entropy_grad=True)

    assert torch.autograd.gradcheck(function, (hidden, weight, bias))
    frozen_weight, frozen_bias = weight.detach(), bias.detach()
    assert torch.autograd.gradcheck(lambda h: function(h, frozen_weight, frozen_bias), (hidden,))


def test_entropy_is_a_detached_metric_by_default() -> None:
    hidden, weight, _, targets = _inputs()
    logprobs, entropy = token_logprobs_and_entropy_from_hidden(hidden, weight, targets, chunk_size=4)
    assert logprobs.requires_grad and not entropy.requires_grad


def test_frozen_weight_gets_no_gradient() -> None:
    hidden, weight, _, targets = _inputs()
    frozen = weight.detach()
    token_logprobs_from_hidden(hidden, frozen, targets, chunk_size=4).sum().backward()
    assert frozen.grad is None and hidden.grad is not None


def test_backward_saves_no_full_logits_tensor() -> None:
    # Record every tensor autograd saves: none may have B*T*V elements (the naive version saves several).
    hidden = torch.randn(4, 16, 8, requires_grad=True)
    weight = torch.randn(500, 8, requires_grad=True)
    targets = torch.randint(0, 500, (4, 16))
    saved_sizes: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved_sizes.append(tensor.numel())
        return tensor

    full_logits = 4 * 16 * 500
    for head in (weight, weight.detach()):  # trainable head, then frozen head (precomputed gradient)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            token_logprobs_and_entropy_from_hidden(hidden, head, targets, chunk_size=8, entropy_grad=True)
        assert saved_sizes and max(saved_sizes) < full_logits / 4
        saved_sizes.clear()
    saved_sizes.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        _naive(hidden, weight, None, targets, 1.0)
    assert max(saved_sizes) >= full_logits  # the check above can fail


def test_bf16_inputs_work_and_stay_close_to_float32() -> None:
    hidden, weight, _, targets = _inputs(torch.bfloat16)
    logprobs, entropy = token_logprobs_and_entropy_from_hidden(hidden, weight, targets, chunk_size=4)
    assert logprobs.dtype == torch.float32 and entropy.dtype == torch.float32
    logprobs.sum().backward()
    assert hidden.grad is not None and hidden.grad.dtype == torch.bfloat16
    assert weight.grad is not None and weight.grad.dtype == torch.bfloat16
    # Same bf16 matmul as the naive version, then float32: they agree closely.
    expected, expected_entropy = _naive(hidden.detach(), weight.detach(), None, targets, 1.0)
    torch.testing.assert_close(logprobs, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(entropy, expected_entropy, atol=1e-4, rtol=1e-4)


def test_selective_log_softmax_matches_naive_including_bf16() -> None:
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(BATCH, SEQ, VOCAB, generator=generator, requires_grad=True)
    index = torch.randint(0, VOCAB, (BATCH, SEQ), generator=generator)
    ours = selective_log_softmax(logits, index, chunk_size=4)
    expected = torch.log_softmax(logits, -1).gather(-1, index.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    (our_grad,) = torch.autograd.grad((ours * torch.arange(SEQ)).sum(), [logits])
    (naive_grad,) = torch.autograd.grad((expected * torch.arange(SEQ)).sum(), [logits])
    torch.testing.assert_close(our_grad, naive_grad, atol=1e-5, rtol=1e-5)

    bf16 = logits.detach().bfloat16().requires_grad_(True)
    ours_bf16 = selective_log_softmax(bf16, index, chunk_size=4)
    assert ours_bf16.dtype == torch.float32
    expected_bf16 = torch.log_softmax(bf16.float(), -1).gather(-1, index.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(ours_bf16, expected_bf16, atol=1e-5, rtol=1e-5)
    ours_bf16.sum().backward()
    assert bf16.grad is not None and bf16.grad.dtype == torch.bfloat16


def test_entropy_from_logits() -> None:
    # Uniform over 4 -> log 4; one-hot-ish (a huge logit) -> about 0.
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(entropy_from_logits(logits, chunk_size=1), torch.tensor([1.3862944, 0.0]))
    assert entropy_from_logits(torch.zeros(0, 4)).shape == (0,)


def test_bad_inputs_raise_clear_errors() -> None:
    hidden, weight, _, targets = _inputs()
    with pytest.raises(ValueError, match=r"target ids must be in \[0, 37\)"):
        token_logprobs_from_hidden(hidden, weight, torch.full_like(targets, 37))
    with pytest.raises(ValueError, match="targets shape"):
        token_logprobs_from_hidden(hidden, weight, targets[:, :2])
    with pytest.raises(ValueError, match="disagree"):
        token_logprobs_from_hidden(hidden, weight[:, :3], targets)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        token_logprobs_from_hidden(hidden, weight, targets, temperature=0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        token_logprobs_from_hidden(hidden, weight, targets, chunk_size=0)
    with pytest.raises(ValueError, match="index shape"):
        selective_log_softmax(torch.zeros(2, 3, 5), torch.zeros(2, dtype=torch.long))


def test_autocast_uses_the_autocast_dtype_like_the_naive_version() -> None:
    hidden, weight, _, targets = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = token_logprobs_from_hidden(hidden, weight, targets.int(), chunk_size=4)
        expected, _ = _naive(hidden, weight, None, targets, 1.0)  # bf16 matmul under autocast
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)
    ours.sum().backward()
    assert hidden.grad is not None and hidden.grad.dtype == torch.float32


# ---- a model's own output transform (Gemma 2 soft-capping, Cohere / Granite scaling) -----------------------

TRANSFORMS = [LogitTransform(scale=4.0), LogitTransform(scale=0.25), LogitTransform(softcap=1.5)]


@pytest.mark.parametrize("transform", TRANSFORMS + [LogitTransform(scale=3.0, softcap=2.0)])
@pytest.mark.parametrize("frozen_head", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_apply_the_models_output_transform_forward_and_backward(
    transform: LogitTransform, frozen_head: bool, temperature: float
) -> None:
    hidden, weight, bias, targets = _inputs(seed=7)
    if frozen_head:
        weight, bias = weight.detach(), bias.detach()
    wrt = [hidden] if frozen_head else [hidden, weight, bias]
    logprobs, entropy = token_logprobs_and_entropy_from_hidden(
        hidden, weight, targets, temperature, 4, bias, entropy_grad=True, logit_transform=transform
    )
    logits = transform.apply(hidden @ weight.T + bias) / temperature
    log_probs = torch.log_softmax(logits, -1)
    expected = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    expected_entropy = -(log_probs.exp() * log_probs).sum(-1)
    torch.testing.assert_close(logprobs, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropy, expected_entropy, atol=1e-5, rtol=1e-5)
    # the transform matters: without it the log-probabilities differ
    untransformed, _ = _naive(hidden, weight, bias, targets, temperature)
    assert (untransformed - expected).abs().max() > 1e-2
    ours = torch.autograd.grad((logprobs * 1.3).sum() - 0.4 * entropy.sum(), wrt)
    naive = torch.autograd.grad((expected * 1.3).sum() - 0.4 * expected_entropy.sum(), wrt)
    for mine, reference in zip(ours, naive, strict=True):
        torch.testing.assert_close(mine, reference, atol=1e-5, rtol=1e-5)


def test_gradcheck_float64_with_a_softcap() -> None:
    generator = torch.Generator().manual_seed(6)
    hidden = torch.randn(2, 3, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 6, (2, 3), generator=generator)
    transform = LogitTransform(scale=2.0, softcap=1.0)

    def function(h: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return token_logprobs_and_entropy_from_hidden(
            h, w, targets, 0.9, 4, entropy_grad=True, logit_transform=transform
        )

    assert torch.autograd.gradcheck(function, (hidden, weight))
    frozen = weight.detach()
    assert torch.autograd.gradcheck(lambda h: function(h, frozen), (hidden,))


def test_a_bad_logit_transform_is_refused() -> None:
    with pytest.raises(ValueError, match="softcap must be a finite number > 0"):
        LogitTransform(softcap=0.0)
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        LogitTransform(scale=float("nan"))
