"""One batched generation: left-padded prompts, a KV cache, rows leaving the batch as they finish.

Written by hand rather than through `model.generate` because each row carries its own sampling parameters,
stop strings, adapter (peft mixed-adapter batches) and token callback, and because the recorded
log-probabilities must be those of the untruncated tempered distribution (see `sampling`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from peft import PeftModel
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from langgraph_omar.sampling import SamplingParams, sample_next

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed-adapter batch


@dataclass
class DecodeRequest:
    prompt_ids: list[int]
    params: SamplingParams
    adapter: str | None = None
    on_token: Callable[[int], object] | None = None


@dataclass
class DecodeResult:
    completion_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str  # "stop", "stop_string" or "length"


def _decode(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    return str(tokenizer.decode(ids, skip_special_tokens=True))


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> str | None:
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[: min(cuts)] if cuts else None


@torch.inference_mode()
def decode_batch(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    requests: list[DecodeRequest],
    eos_ids: set[int],
) -> list[DecodeResult]:
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    width = max(len(r.prompt_ids) for r in requests)
    ids = torch.full((len(requests), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(requests), width), dtype=torch.long)
    for i, r in enumerate(requests):
        ids[i, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids)
        mask[i, width - len(r.prompt_ids) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)

    generators: list[torch.Generator | None] = []
    for r in requests:
        generator = None
        if r.params.seed is not None:
            generator = torch.Generator(device=device)
            generator.manual_seed(r.params.seed)
        generators.append(generator)

    completions: list[list[int]] = [[] for _ in requests]
    logprobs: list[list[float]] = [[] for _ in requests]
    results: list[DecodeResult | None] = [None] * len(requests)
    active = list(range(len(requests)))  # request index of each row still in the batch
    cache = DynamicCache()
    is_peft = isinstance(model, PeftModel)

    while active:
        extra = {"adapter_names": [requests[i].adapter or BASE_ADAPTER for i in active]} if is_peft else {}
        logits = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
            **extra,
        ).logits[:, -1]
        tokens, token_logprobs = sample_next(
            logits, [requests[i].params for i in active], [generators[i] for i in active]
        )
        keep = []
        for row, (i, token, lp) in enumerate(
            zip(active, tokens.tolist(), token_logprobs.tolist(), strict=True)
        ):
            request = requests[i]
            completions[i].append(token)
            logprobs[i].append(lp)
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
            results[i] = DecodeResult(completions[i], logprobs[i], text, reason)
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
    return [r for r in results if r is not None]
