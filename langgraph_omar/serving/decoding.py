"""Batched generation: left-padded prompts, a KV cache, rows joining and leaving the batch between steps.

Written by hand rather than through `model.generate` because each row carries its own sampling parameters,
stop strings, adapter (peft mixed-adapter batches) and token callback, and because the recorded
log-probabilities must be those of the untruncated tempered distribution (see `sampling`). A request may
carry a grammar (`constraints.RowGrammar`): each step, the rows that have one get their allowed-token masks
(filled one row at a time, on the CPU), sample under them, and advance their matchers with the sampled token;
the recorded ids are the ids taken and the recorded log-probabilities are unmasked (see `sampling`). Near a
row's token cap its grammar may replace the sampled token by one that closes the output in time (`closing`).
When no row in the batch has a grammar, the loop does exactly what it did before grammars existed.

`RunningBatch` is the loop's state (continuous batching, as in vLLM, TGI and SGLang): `add` prefills new
requests on their own and packs their keys and values beside the running rows', `step` samples one token for
every row, hands back the rows that finished and feeds the others one token. `decode_batch` runs one group of
requests to the end. A row's tokens depend only on its own request (its prompt, parameters, seed, adapter,
grammar), not on which rows it decodes beside or when it joined: padding is masked and each seeded row
samples from its own generator.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch
from peft import PeftModel
from torch.func import functional_call
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from langgraph_omar.serving.constraints import RowGrammar, allowed_tokens
from langgraph_omar.serving.kv_cache import (
    GrowingLayer,
    cast_cache,
    growing_cache,
    is_growing,
    keep_rows,
    pack_rows,
)
from langgraph_omar.serving.precision import autocast_forward, weights_dtype
from langgraph_omar.serving.prefix_cache import CachedSequence, PrefixCache
from langgraph_omar.serving.sampling import SamplingParams, sample_next, token_logprob
from langgraph_omar.serving.stops import StopWatch

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
    closed_early: bool = False  # a constrained row took closing tokens to complete before its cap


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
    if not is_growing(cache):
        return None
    layers = cast(list[GrowingLayer], cache.layers)
    columns = mask_row.nonzero().squeeze(-1)
    return CachedSequence(
        ids=np.asarray(ids, dtype=np.int64),
        keys=[cast(torch.Tensor, layer.keys)[row][:, columns] for layer in layers],
        values=[cast(torch.Tensor, layer.values)[row][:, columns] for layer in layers],
    )


_CACHE_ARGUMENT: dict[type, str] = {}  # model class -> the name its forward takes the KV cache by


def _cache_argument(model: torch.nn.Module) -> str:
    """The name `model`'s forward takes its KV cache by: `cache` since transformers 5.x renamed it (the old
    `past_key_values` still works there but warns on every call), else `past_key_values`."""
    cls = type(model)
    if cls not in _CACHE_ARGUMENT:
        takes_cache = "cache" in inspect.signature(model.forward).parameters
        _CACHE_ARGUMENT[cls] = "cache" if takes_cache else "past_key_values"
    return _CACHE_ARGUMENT[cls]


def keep_head_input_contiguous(model: PreTrainedModel | PeftModel) -> None:
    """Make `model`'s output head see contiguous inputs. A prefill's `logits_to_keep=1` hands the head the last
    position as a (B, 1, H) view whose rows lie S*H apart; torch's matmul cannot fold that view into one
    matrix product without a copy, so it batches it instead and materialises the (H, V) head weight B times
    (113 MB a row for SmolLM2: measured, most of a 14-row prefill's 6.4 s). A forward pre-hook copies the
    few-KB slice instead; an input that is already contiguous passes through untouched."""
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(_contiguous_first_input)


def _contiguous_first_input(_: torch.nn.Module, args: tuple[object, ...]) -> tuple[object, ...]:
    first = args[0]
    return (first.contiguous(), *args[1:]) if isinstance(first, torch.Tensor) else args


def next_logits(
    model: PreTrainedModel | PeftModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor,
    cache: DynamicCache,
    adapters: list[str | None],
    weights: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Feed ids (B, S) after the cache; the logits (B, V) of each row's next token. Every forward pass of
    generation (prefills and one-token steps) goes through here. weights: tensors to run the forward on in
    place of `model`'s own, by name (`precision.autocast_forward`)."""
    extra: dict[str, object] = {}
    if isinstance(model, PeftModel):
        extra["adapter_names"] = [a or BASE_ADAPTER for a in adapters]
    extra[_cache_argument(model.get_base_model() if isinstance(model, PeftModel) else model)] = cache
    inputs = dict(
        input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1
    )
    if weights:
        return functional_call(model, weights, (), {**inputs, **extra}).logits[:, -1]
    return model(**inputs, **extra).logits[:, -1]


def _left_pad(mask: torch.Tensor, width: int) -> torch.Tensor:
    """mask (B, W) with zero columns added on the left up to (B, width)."""
    return torch.nn.functional.pad(mask, (width - mask.shape[1], 0))


def _first_live_column(mask: torch.Tensor) -> int:
    """The first column of mask (B, W) where some row has a position: the ones before it hold nothing."""
    live = mask.any(dim=0)
    return int(live.int().argmax()) if bool(live.any()) else mask.shape[1]


@dataclass
class _Row:
    """One request being decoded: what it has produced so far."""

    request: DecodeRequest
    key: object  # the caller's handle, handed back with the result
    generator: torch.Generator | None
    stops: StopWatch | None
    completion: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    masked: list[float] = field(default_factory=list)


class RunningBatch:
    """Rows decoding together. Between steps, new requests join (`add`) and finished ones leave (`step`).

    State, B rows: `cache` (a growing KV cache, B rows of W positions), `mask` (B, W + 1 after a step's token
    is appended: the positions each row has), `positions` (B, 1) the position of each row's last fed token,
    `logits` (B, V) each row's next-token logits, not yet sampled.
    """

    def __init__(
        self,
        model: PreTrainedModel | PeftModel,
        tokenizer: PreTrainedTokenizerBase,
        eos_ids: set[int],
        prefix_cache: PrefixCache | None = None,
        prefill_dtype: torch.dtype | None = None,
    ) -> None:
        """prefill_dtype: the prefill forward runs under this autocast type (see `precision`); decoding runs in
        the weights' type, and the prefilled keys and values are cast to it."""
        self.model, self.tokenizer, self.eos_ids, self.prefix_cache = model, tokenizer, eos_ids, prefix_cache
        self.prefill_dtype = prefill_dtype
        self.device = next(model.parameters()).device
        self.rows: list[_Row] = []
        self.cache: DynamicCache | None = None
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)
        self.positions = torch.zeros((0, 1), dtype=torch.long, device=self.device)
        self.logits: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def can_join(self) -> bool:
        """Whether rows can join now: the batch is empty, or its cache packs by position (`is_growing`)."""
        return self.cache is None or is_growing(self.cache)

    def add(self, requests: list[DecodeRequest], keys: list[object]) -> None:
        """Prefill `requests` (each from its longest stored prefix) and put them in the batch; the next `step`
        samples their first tokens. keys: one handle per request, handed back with its result."""
        if not requests:
            return
        # identical prompts (a self-play group's first turn) are prefilled once, then their rows are copied
        slot: dict[tuple[str | None, tuple[int, ...]], int] = {}
        distinct: list[DecodeRequest] = []
        copy_of = []  # each request's row among the distinct ones
        for r in requests:
            slot_key = (r.adapter, tuple(r.prompt_ids))
            if slot_key not in slot:
                slot[slot_key] = len(distinct)
                distinct.append(r)
            copy_of.append(slot[slot_key])
        cached = self.prefix_cache
        prefixes = [cached.lookup(r.adapter, r.prompt_ids) if cached else (None, 0) for r in distinct]
        ids, mask, cache = _prefill_inputs(distinct, prefixes, self.tokenizer.pad_token_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, mask.shape[1] - ids.shape[1] :]
        with autocast_forward(self.model, self.prefill_dtype) as weights:
            adapters = [r.adapter for r in distinct]
            logits = next_logits(self.model, ids, mask, positions, cache, adapters, weights)
        cast_cache(cache, weights_dtype(self.model))
        self._store_prompts(distinct, cache, mask)
        positions = positions[:, -1:]
        copies = torch.tensor(copy_of, device=self.device) if len(distinct) < len(requests) else None
        if copies is not None:
            logits, mask, positions = logits[copies], mask[copies], positions[copies]
        rows = [
            _Row(r, key, self._generator(r), self._stop_watch(r))
            for r, key in zip(requests, keys, strict=True)
        ]
        if self.cache is None:
            if copies is not None:
                cache.batch_select_indices(copies)
            self.cache, self.mask, self.positions, self.logits = cache, mask, positions, logits
        else:
            assert self.logits is not None and self.can_join and is_growing(cache)
            start = _first_live_column(self.mask)
            width = max(self.mask.shape[1] - start, mask.shape[1])
            self.cache = pack_rows([(self.cache, None, start), (cache, copies, 0)], width)
            self.mask = torch.cat([_left_pad(self.mask[:, start:], width), _left_pad(mask, width)])
            self.positions = torch.cat([self.positions, positions])
            self.logits = torch.cat([self.logits, logits])
        self.rows += rows

    def _store_prompts(self, requests: list[DecodeRequest], cache: DynamicCache, mask: torch.Tensor) -> None:
        """Keep the prefilled prompts' keys and values, so that a prompt arriving while these rows decode reuses
        what it shares with them (the other episodes of a self-play group open with the same system prompt);
        a row's finished sequence replaces its prompt's entry."""
        if self.prefix_cache is None:
            return
        for row, request in enumerate(requests):
            if (stored := _finished_sequence(cache, row, mask[row], request.prompt_ids)) is not None:
                self.prefix_cache.store(request.adapter, stored)

    def _generator(self, request: DecodeRequest) -> torch.Generator | None:
        if request.params.seed is None:
            return None
        generator = torch.Generator(device=self.device)
        generator.manual_seed(request.params.seed)
        return generator

    def _stop_watch(self, request: DecodeRequest) -> StopWatch | None:
        return StopWatch(self.tokenizer, request.params.stop) if request.params.stop else None

    def step(self) -> list[tuple[object, DecodeResult]]:
        """Sample one token for every row; return (key, result) of the rows that finished (they leave), and
        feed the others their token, so their next logits are ready for the next step."""
        if self.logits is None or not self.rows:
            return []
        rows, logits = self.rows, self.logits
        constrained = [i for i, row in enumerate(rows) if row.request.grammar is not None]
        allowed = None
        if constrained:
            grammars = [cast(RowGrammar, rows[i].request.grammar) for i in constrained]
            allowed = (constrained, allowed_tokens(grammars, logits.shape[-1], logits.device))
        tokens, token_logprobs, token_masked = sample_next(
            logits, [row.request.params for row in rows], [row.generator for row in rows], allowed
        )
        masked_values = token_masked.tolist() if constrained else []
        finished: list[tuple[object, DecodeResult]] = []
        keep, forced = [], {}
        for i, (row, token, lp) in enumerate(
            zip(rows, tokens.tolist(), token_logprobs.tolist(), strict=True)
        ):
            request = row.request
            if request.grammar is not None:
                # near the cap, the grammar may take its closing token instead (`closing`): recorded with its
                # unmasked log-probability like any other, and masked log-probability 0 (it was the only choice)
                kept = request.grammar.choose(token, request.params.max_new_tokens - len(row.completion))
                if kept != token:
                    token, lp = kept, token_logprob(logits[i], request.params.temperature, kept)
                    forced[i] = kept
                    masked_values[i] = 0.0
                request.grammar.advance(token)
                row.masked.append(masked_values[i])
            row.completion.append(token)
            row.logprobs.append(lp)
            if request.on_token is not None:
                request.on_token(token)
            stopped = row.stops is not None and row.stops.push(token)
            if token in self.eos_ids or stopped or len(row.completion) >= request.params.max_new_tokens:
                finished.append((row.key, self._finish(i, row, token)))
            else:
                keep.append(i)
        if forced:
            tokens = tokens.clone()
            tokens[list(forced)] = torch.tensor(list(forced.values()), device=tokens.device)
        if len(keep) < len(rows):
            self._retain(keep)
            tokens = tokens[torch.tensor(keep, device=self.device)] if keep else tokens[:0]
        if self.rows:
            assert self.cache is not None
            ids = tokens[:, None]
            self.mask = torch.cat([self.mask, torch.ones_like(ids)], dim=1)
            self.positions = self.positions + 1
            adapters = [row.request.adapter for row in self.rows]
            self.logits = next_logits(self.model, ids, self.mask, self.positions, self.cache, adapters)
        return finished

    def _finish(self, index: int, row: _Row, token: int) -> DecodeResult:
        """Row `index`'s result (its text is one full decode, cut at its first stop string), and its keys and
        values stored for later prompts that start the same way."""
        request = row.request
        text = _decode(self.tokenizer, row.completion)
        cut = _cut_at_stop(text, request.params.stop) if request.params.stop else None
        reason = "stop" if token in self.eos_ids else "stop_string" if cut is not None else "length"
        text = cut if cut is not None else text
        if self.prefix_cache is not None and self.cache is not None:
            fed = request.prompt_ids + row.completion[:-1]
            if (stored := _finished_sequence(self.cache, index, self.mask[index], fed)) is not None:
                self.prefix_cache.store(request.adapter, stored)
        masked = row.masked if request.grammar is not None else None
        closed_early = request.grammar is not None and request.grammar.closed_early
        return DecodeResult(row.completion, row.logprobs, text, reason, masked, closed_early)

    def _retain(self, keep: list[int]) -> None:
        """Keep only rows `keep` (ascending). The columns no kept row uses are dropped when they are a quarter
        of the width or more (a copy of the kept keys and values); fewer stay until rows join (`add` drops
        them), so that most rows leave at the cost of moving the rows after them."""
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache, self.logits = None, None
            self.mask, self.positions = self.mask[:0, :0], self.positions[:0]
            return
        assert self.cache is not None and self.logits is not None
        rows = torch.tensor(keep, device=self.device)
        mask = self.mask[rows]
        if not is_growing(self.cache):
            self.cache.batch_select_indices(rows)
        elif 4 * (start := _first_live_column(mask)) >= mask.shape[1]:
            self.cache = pack_rows([(self.cache, rows, start)], mask.shape[1] - start)
            mask = mask[:, start:]
        else:
            keep_rows(self.cache, keep)
        self.mask, self.positions, self.logits = mask, self.positions[rows], self.logits[rows]


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
    prefill_dtype: see `RunningBatch`."""
    batch = RunningBatch(model, tokenizer, eos_ids, prefix_cache, prefill_dtype)
    batch.add(requests, list(range(len(requests))))
    results: list[DecodeResult | None] = [None] * len(requests)
    while batch:
        for key, result in batch.step():
            results[cast(int, key)] = result
    return [r for r in results if r is not None]
