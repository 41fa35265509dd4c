"""Per-row sampling from next-token logits, with the log-probability the trainer will recompute.

transformers' `generate` applies one set of sampling parameters to a whole batch and reports scores after
its logits processors; a batch that coalesces calls from many roles needs per-row parameters and the
log-probability under the untruncated tempered distribution, so this small piece is written here.

Constrained rows (a grammar, see `constraints`) sample from the tempered distribution restricted to the tokens
their grammar allows, renormalised, then top-k / top-p truncated. Their recorded log-probability is still the
one under the full tempered distribution, the same quantity as for every other row, for three reasons:
- the trainer recomputes exactly that from the weights (`rl/logprobs.py` knows nothing of grammars), so the
  PPO ratio starts at 1 and `logprob_mismatch` stays ~0 on constrained turns, as it does for truncated ones;
- the masked distribution's normaliser depends on the weights too, so training on it would need every
  position's allowed set (vocabulary/8 bytes a token) replayed in the trainer;
- the consequence for PPO: the update raises the unconstrained policy's probability of the tokens that won
  (format tokens included: the model learns the format it was held to), and a forced token (the only one
  allowed) has a ratio and a gradient like any other, where the masked policy would give it neither. The
  behaviour policy differs from the recorded one by the allowed mass Z <= 1 at each position, the same kind of
  gap top-p truncation already leaves.
The masked log-probability (log p - log Z, what the sampler actually used before truncation) is returned too,
and the engine keeps it in the token record's `extra["masked_logprobs"]`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0 means greedy decoding
    top_p: float = 1.0
    top_k: int = 0  # 0 means no top-k truncation
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.temperature < math.inf:  # NaN fails every comparison: refused (it decoded greedily)
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.max_new_tokens < 1:
            raise ValueError("top_k must be >= 0 and max_new_tokens >= 1")


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that depends on every part and on nothing else (not on Python's hash salt)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def tempered_logprobs(logits: torch.Tensor, temperatures: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits / T) per row; greedy rows (T = 0) use T = 1.

    logits: (B, V); temperatures: (B,). Returns (B, V) float32.
    """
    t = torch.where(temperatures > 0, temperatures, torch.ones_like(temperatures))
    return torch.log_softmax(logits.float() / t[:, None], dim=-1)


def token_logprob(logits: torch.Tensor, temperature: float, token: int) -> float:
    """log_softmax(logits / T)[token] for one row's logits (V,): a forced token's recorded log-probability."""
    temperatures = torch.tensor([temperature], device=logits.device, dtype=torch.float32)
    return float(tempered_logprobs(logits[None], temperatures)[0, token])


def truncate(logprobs: torch.Tensor, top_p: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """Mask (to -inf) tokens outside each row's top-k and nucleus top-p. logprobs (B, V); top_p, top_k (B,)."""
    sorted_lp, order = logprobs.sort(dim=-1, descending=True)
    ranks = torch.arange(logprobs.shape[-1], device=logprobs.device)[None, :]
    mass_before = sorted_lp.exp().cumsum(-1) - sorted_lp.exp()
    drop = mass_before >= top_p[:, None]
    drop |= (top_k[:, None] > 0) & (ranks >= top_k[:, None])
    drop[:, 0] = False  # the most likely token always survives
    sorted_lp = sorted_lp.masked_fill(drop, float("-inf"))
    return torch.empty_like(logprobs).scatter_(-1, order, sorted_lp)


class Sampled(NamedTuple):
    tokens: torch.Tensor  # (B,) the sampled ids
    logprobs: torch.Tensor  # (B,) their log-probabilities under the tempered, unmasked distribution
    masked_logprobs: torch.Tensor  # (B,) under the distribution restricted to the allowed tokens (= logprobs
    # on unconstrained rows)


def sample_next(
    logits: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator | None],
    allowed: tuple[list[int], torch.Tensor] | None = None,
) -> Sampled:
    """Pick one token per row; see the module docstring for which log-probabilities come back.

    logits (B, V). allowed: (rows, mask) with mask (len(rows), V) bool, True where row rows[j]'s grammar allows
    the token; None when no row is constrained. A row with a generator (a seeded request) samples from it
    alone, so its tokens do not depend on what else is in the batch; rows without one share torch's default
    generator.
    """
    device = logits.device
    temps = torch.tensor([p.temperature for p in params], device=device, dtype=torch.float32)
    logprobs = tempered_logprobs(logits, temps)
    sampling = logprobs
    if allowed is not None:
        rows = torch.tensor(allowed[0], device=device)
        sampling = logprobs.clone()
        sampling[rows] = torch.log_softmax(logprobs[rows].masked_fill(~allowed[1], float("-inf")), dim=-1)
    tokens = sampling.argmax(dim=-1)
    sampled_rows = [i for i, p in enumerate(params) if p.temperature > 0]
    if sampled_rows:
        rows = torch.tensor(sampled_rows, device=device)
        candidates = sampling[rows]
        if any(params[i].top_p < 1 or params[i].top_k > 0 for i in sampled_rows):
            top_p = torch.tensor([params[i].top_p for i in sampled_rows], device=device)
            top_k = torch.tensor([params[i].top_k for i in sampled_rows], device=device)
            candidates = truncate(candidates, top_p, top_k)
        tokens[rows] = _draw(candidates.exp(), [generators[i] for i in sampled_rows])
    chosen = logprobs.gather(-1, tokens[:, None]).squeeze(-1)
    masked = chosen if allowed is None else sampling.gather(-1, tokens[:, None]).squeeze(-1)
    return Sampled(tokens, chosen, masked)


def _draw(probs: torch.Tensor, generators: list[torch.Generator | None]) -> torch.Tensor:
    """One token per row of probs (R, V) (unnormalised, >= 0), each row from its own generator (None: torch's
    default one): (R,).

    Inverse-CDF sampling: the first token whose cumulative probability exceeds u x total, with one uniform u
    per row. A row's generator gives one number per token, so seeded rows cost a Python call each, not a draw
    over the vocabulary (`torch.multinomial` draws V exponentials per row: on 2 CPU cores, 32 seeded rows at a
    49k vocabulary spent about a fifth of a decoding step there); the cumulative sums (float64, so the
    distribution's tail is not rounded away) and the search run once for the batch. A zero-probability token
    is never chosen: its cumulative sum equals its predecessor's.
    """
    uniforms = torch.empty(len(generators), dtype=torch.float64, device=probs.device)
    shared = [j for j, g in enumerate(generators) if g is None]
    if len(shared) == len(generators):
        uniforms.uniform_()
    elif shared:  # unseeded rows draw together
        uniforms[shared] = torch.rand(len(shared), dtype=torch.float64, device=probs.device)
    for j, generator in enumerate(generators):
        if generator is not None:
            uniforms[j] = torch.rand(1, generator=generator, dtype=torch.float64, device=probs.device)[0]
    cdf = probs.double().cumsum(dim=-1)
    targets = uniforms[:, None] * cdf[:, -1:]
    return torch.searchsorted(cdf, targets, right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)
