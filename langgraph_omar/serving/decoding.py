"""One batched generation: left-padded prompts, a KV cache, rows leaving the batch as they finish.

Written by hand rather than through `model.generate` because each row carries its own sampling parameters,
stop strings, adapter (peft mixed-adapter batches) and token callback, and because the recorded
log-probabilities must be those of the untruncated tempered distribution (see `sampling`). A request may
carry a grammar (`constraints.RowGrammar`): each step, the rows that have one get their allowed-token masks
(filled one row at a time, on the CPU), sample under them, and advance their matchers with the sampled token;
the recorded ids are the sampled ids and the recorded log-probabilities are unmasked (see `sampling`). When
no row in the batch has a grammar, the loop does exactly what it did before grammars existed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from peft import PeftModel
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from langgraph_omar.serving.constraints import RowGrammar, allowed_tokens
from langgraph_omar.serving.kv_cache import GrowingLayer, cast_cache, growing_cache
from langgraph_omar.serving.precision import autocast_forward, weights_dtype
from langgraph_omar.serving.prefix_cache import CachedSequence, PrefixCache
from langgraph_omar.serving.sampling import SamplingParams, sample_next

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed-adapter batch


@dataclass
class DecodeRequest:
    prompt_ids: list[int]
    params: SamplingParams
    adapter: str | None = None
    on_token: Callable[[int], object] | None = None
    grammar: RowGrammar | None = None  # this request's own matcher; None: unconstrained


@dataclass
class DecodeResult:
    completion_ids: list[int]
    logprobs: list[float]  # unmasked, as for any row (see `sampling`)
    text: str
    finish_reason: str  # "stop", "stop_string" or "length"
    masked_logprobs: list[float] | None = None  # constrained rows: under the allowed tokens only


def _decode(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    return str(tokenizer.decode(ids, skip_special_tokens=True))


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> str | None:
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[: min(cuts)] if cuts else None


def _prefill_inputs(
    requests: list[DecodeRequest], prefixes: list[tuple[CachedSequence | None, int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, DynamicCache]:
    """The first forward's inputs: the uncached prompt tokens (B, S), the attention mask (B, P + S) and a
    cache of width P holding each row's reused prefix.

    Row r reuses n_r stored positions and feeds the other s_r prompt tokens; P = max n_r, S = max s_r. Both
    parts are right-aligned in their own columns: mask columns [P - n_r, P) and [P + S - s_r, P + S) are
    ones, so the padding between them is a hole the mask hides (positions come from the mask's cumsum).
    """
    width = max((n for _, n in prefixes), default=0)
    suffixes = [r.prompt_ids[n:] for r, (_, n) in zip(requests, prefixes, strict=True)]
    feed = max(len(s) for s in suffixes)
    ids = torch.full((len(requests), feed), pad_id, dtype=torch.long)
    mask = torch.zeros((len(requests), width + feed), dtype=torch.long)
    for row, (suffix, (_, n)) in enumerate(zip(suffixes, prefixes, strict=True)):
        ids[row, feed - len(suffix) :] = torch.tensor(suffix)
        mask[row, width - n : width] = 1
        mask[row, width + feed - len(suffix) :] = 1
    prefix = []
    if width:
        reference = next(entry for entry, _ in prefixes if entry is not None)
        for layer in range(len(reference.keys)):
            k, v = (
                torch.zeros(len(requests), *t.shape[:-2], width, t.shape[-1], dtype=t.dtype, device=t.device)
                for t in (reference.keys[layer], reference.values[layer])
            )
            for row, (entry, n) in enumerate(prefixes):
                if entry is not None:
                    k[row, :, width - n :] = entry.keys[layer][:, :n]
                    v[row, :, width - n :] = entry.values[layer][:, :n]
            prefix.append((k, v))
    return ids, mask, growing_cache(prefix)


def _finished_sequence(
    cache: DynamicCache, row: int, mask_row: torch.Tensor, ids: list[int]
) -> CachedSequence | None:
    """Row `row`'s keys and values for the tokens fed so far (`ids`, the mask's ones), for the prefix cache;
    None when the model filled the cache with layers of its own kind instead of `GrowingLayer`s."""
    layers = [layer for layer in cache.layers if isinstance(layer, GrowingLayer)]
    if len(layers) != len(cache.layers):
        return None
    columns = mask_row.nonzero().squeeze(-1)
    return CachedSequence(
        ids=np.asarray(ids, dtype=np.int64),
        keys=[cast(torch.Tensor, layer.keys)[row][:, columns] for layer in layers],
        values=[cast(torch.Tensor, layer.values)[row][:, columns] for layer in layers],
    )


def _next_logits(
    model: PreTrainedModel | PeftModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor,
    cache: DynamicCache,
    adapters: list[str | None],
) -> torch.Tensor:
    """Feed ids (B, S) after the cache; the logits (B, V) of each row's next token."""
    extra = {"adapter_names": [a or BASE_ADAPTER for a in adapters]} if isinstance(model, PeftModel) else {}
    return model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
        **extra,
    ).logits[:, -1]


@torch.inference_mode()
def decode_batch(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    requests: list[DecodeRequest],
    eos_ids: set[int],
    prefix_cache: PrefixCache | None = None,
    prefill_dtype: torch.dtype | None = None,
) -> list[DecodeResult]:
    """Generate every request's completion in one batch. With a `prefix_cache`, each prompt starts from its
    longest stored prefix (per adapter), and each finished sequence is stored for later prompts.
    prefill_dtype: the prefill forward runs under this autocast type (see `precision`); decoding runs in the
    weights' type, and the prefilled keys and values are cast to it."""
    device = next(model.parameters()).device
    # identical prompts (a self-play group's first turn) are prefilled once, then their rows are copied
    slot: dict[tuple[str | None, tuple[int, ...]], int] = {}
    distinct: list[DecodeRequest] = []
    copy_of = []  # each request's row among the distinct ones
    for r in requests:
        key = (r.adapter, tuple(r.prompt_ids))
        if key not in slot:
            slot[key] = len(distinct)
            distinct.append(r)
        copy_of.append(slot[key])
    prefixes = [
        prefix_cache.lookup(r.adapter, r.prompt_ids) if prefix_cache is not None else (None, 0)
        for r in distinct
    ]
    ids, mask, cache = _prefill_inputs(distinct, prefixes, tokenizer.pad_token_id)
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, mask.shape[1] - ids.shape[1] :]
    with autocast_forward(model, prefill_dtype):
        logits = _next_logits(model, ids, mask, positions, cache, [r.adapter for r in distinct])
    cast_cache(cache, weights_dtype(model))
    if len(distinct) < len(requests):
        copies = torch.tensor(copy_of, device=device)
        cache.batch_select_indices(copies)
        logits, mask, positions = logits[copies], mask[copies], positions[copies]

    generators: list[torch.Generator | None] = []
    for r in requests:
        generator = None
        if r.params.seed is not None:
            generator = torch.Generator(device=device)
            generator.manual_seed(r.params.seed)
        generators.append(generator)

    completions: list[list[int]] = [[] for _ in requests]
    logprobs: list[list[float]] = [[] for _ in requests]
    masked_logprobs: list[list[float]] = [[] for _ in requests]
    results: list[DecodeResult | None] = [None] * len(requests)
    active = list(range(len(requests)))  # request index of each row still in the batch

    while active:
        constrained = [row for row, i in enumerate(active) if requests[i].grammar is not None]
        allowed = None
        if constrained:
            grammars = [cast(RowGrammar, requests[active[row]].grammar) for row in constrained]
            allowed = (constrained, allowed_tokens(grammars, logits.shape[-1], logits.device))
        tokens, token_logprobs, token_masked = sample_next(
            logits, [requests[i].params for i in active], [generators[i] for i in active], allowed
        )
        masked_values = token_masked.tolist() if constrained else []
        keep = []
        for row, (i, token, lp) in enumerate(
            zip(active, tokens.tolist(), token_logprobs.tolist(), strict=True)
        ):
            request = requests[i]
            completions[i].append(token)
            logprobs[i].append(lp)
            if request.grammar is not None:
                request.grammar.advance(token)
                masked_logprobs[i].append(masked_values[row])
            if request.on_token is not None:
                request.on_token(token)
            text = None
            if request.params.stop:
                text = _cut_at_stop(_decode(tokenizer, completions[i]), request.params.stop)
            if token in eos_ids:
                reason = "stop"
            elif text is not None:
                reason = "stop_string"
            elif len(completions[i]) >= request.params.max_new_tokens:
                reason = "length"
            else:
                keep.append(row)
                continue
            if text is None:
                text = _decode(tokenizer, completions[i])
            if prefix_cache is not None:
                fed = request.prompt_ids + completions[i][:-1]
                if (finished := _finished_sequence(cache, row, mask[row], fed)) is not None:
                    prefix_cache.store(request.adapter, finished)
            masked = masked_logprobs[i] if request.grammar is not None else None
            results[i] = DecodeResult(completions[i], logprobs[i], text, reason, masked)
        if not keep:
            break
        if len(keep) < len(active):
            rows = torch.tensor(keep, device=device)
            cache.batch_select_indices(rows)
            tokens, mask, positions = tokens[rows], mask[rows], positions[rows]
            active = [active[r] for r in keep]
        ids = tokens[:, None]
        mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
        positions = positions[:, -1:] + 1
        logits = _next_logits(model, ids, mask, positions, cache, [requests[i].adapter for i in active])
    return [r for r in results if r is not None]
