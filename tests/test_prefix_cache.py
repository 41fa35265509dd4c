"""Prefix reuse gives what a full prefill gives; the store keeps per-adapter entries within its budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from langgraph_omar.serving.decoding import DecodeRequest, RunningBatch, decode_batch
from langgraph_omar.serving.prefix_cache import CachedSequence, PrefixCache, common_prefix_length
from langgraph_omar.serving.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0, max_new_tokens=6)
SAMPLED = SamplingParams(temperature=1.0, max_new_tokens=6, seed=11)


def sequence(ids: list[int], width: int = 4) -> CachedSequence:
    """A stored sequence of one layer whose keys/values are (1 head, len(ids), width) float32."""
    kv = torch.zeros(1, len(ids), width)
    return CachedSequence(np.asarray(ids, dtype=np.int64), [kv], [kv.clone()])


def test_common_prefix_length():
    assert common_prefix_length(np.array([1, 2, 3]), np.array([1, 2, 4, 5])) == 2
    assert common_prefix_length(np.array([1, 2]), np.array([1, 2, 3])) == 2
    assert common_prefix_length(np.array([7]), np.array([1])) == 0


def test_lookup_takes_the_longest_prefix_of_the_same_adapter_and_leaves_one_token_to_feed():
    cache = PrefixCache(max_bytes=10**6)
    cache.store(None, sequence([1, 2, 3]))
    cache.store(None, sequence([1, 2, 9, 9, 9]))
    cache.store("trained", sequence([1, 2, 3, 4, 5]))
    entry, reused = cache.lookup(None, [1, 2, 3, 4])
    assert entry is not None and entry.ids.tolist() == [1, 2, 3] and reused == 3
    # the whole prompt is stored: all but its last token are reused (its logits are still needed)
    assert cache.lookup("trained", [1, 2, 3])[1] == 2
    assert cache.lookup("other", [1, 2, 3]) == (None, 0)


def test_store_replaces_its_prefixes_and_evicts_least_recently_used_beyond_the_budget():
    one = sequence([1]).nbytes  # bytes of one stored position
    cache = PrefixCache(max_bytes=6 * one)
    cache.store(None, sequence([1, 2]))
    cache.store(None, sequence([1, 2, 3]))  # extends [1, 2]: that one goes
    assert len(cache) == 1 and cache.nbytes == 3 * one
    cache.store(None, sequence([5, 6]))
    cache.lookup(None, [1, 2, 3, 4])  # [1, 2, 3] is now the most recently used
    cache.store(None, sequence([7, 8]))  # 7 positions > 6: the least recently used ([5, 6]) goes
    assert cache.lookup(None, [5, 6, 0]) == (None, 0)
    assert cache.lookup(None, [1, 2, 3, 0])[1] == 3
    assert cache.nbytes == 5 * one
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


def next_turn(policy, request: DecodeRequest, completion: list[int], text: str) -> list[int]:
    """The prompt of the role's next turn: its last prompt and reply, then a new user message."""
    extra = policy.tokenizer(text, add_special_tokens=False)["input_ids"]
    return request.prompt_ids + completion + extra


@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "seeded"])
def test_reused_prefixes_give_the_tokens_and_logprobs_of_a_full_prefill(policy, params):
    texts = ["hello there", "OFFER 120 for the bike", "vote alice now please"]
    first = [DecodeRequest(policy.render([{"role": "user", "content": t}], 6)[0], params) for t in texts]
    cache = PrefixCache(max_bytes=10**8)
    done = decode_batch(policy.model, policy.tokenizer, first, policy.eos_ids, prefix_cache=cache)
    assert len(cache) == 3
    # a batch mixing continued conversations (different reused lengths) with a fresh prompt
    second = [
        DecodeRequest(next_turn(policy, r, d.completion_ids, t), params)
        for r, d, t in zip(first, done, [" ACCEPT", " no deal at all", " why"], strict=True)
    ] + [DecodeRequest(policy.render([{"role": "user", "content": "a fresh one"}], 6)[0], params)]
    reused = decode_batch(policy.model, policy.tokenizer, second, policy.eos_ids, prefix_cache=cache)
    assert cache.hits >= sum(len(r.prompt_ids) for r in first)
    for request, got in zip(second, reused, strict=True):
        (full,) = decode_batch(policy.model, policy.tokenizer, [request], policy.eos_ids)
        assert got.completion_ids == full.completion_ids
        assert torch.allclose(torch.tensor(got.logprobs), torch.tensor(full.logprobs), atol=1e-5)


def test_engine_drops_stored_prefixes_when_weights_change(policy):
    prompt = policy.render([{"role": "user", "content": "hello"}], 6)[0]
    policy.generate(prompt, GREEDY)
    assert policy.prefix_cache is not None and len(policy.prefix_cache) == 1
    with policy.exclusive():
        pass  # a training step on the served tensors
    assert len(policy.prefix_cache) == 0


def test_identical_prompts_prefilled_once_still_sample_their_own_tokens(policy):
    same = policy.render([{"role": "user", "content": "OFFER 120 for the bike"}], 8)[0]
    other = policy.render([{"role": "user", "content": "vote alice"}], 8)[0]
    requests = [
        DecodeRequest(prompt, SamplingParams(temperature=1.0, max_new_tokens=8, seed=seed))
        for prompt, seed in [(same, 1), (other, 2), (same, 3), (same, 4)]
    ]
    together = decode_batch(policy.model, policy.tokenizer, requests, policy.eos_ids)
    alone = [decode_batch(policy.model, policy.tokenizer, [r], policy.eos_ids)[0] for r in requests]
    assert [r.completion_ids for r in together] == [r.completion_ids for r in alone]
    for got, want in zip(together, alone, strict=True):
        assert torch.allclose(torch.tensor(got.logprobs), torch.tensor(want.logprobs), atol=1e-5)
    assert len({tuple(r.completion_ids) for r in together}) > 1  # copies of one prompt, each its own sample


def test_a_prompt_arriving_while_another_decodes_reuses_the_prefix_they_share(policy):
    system = {"role": "system", "content": "You sell a bike. Be brief, make offers, and say DEAL to accept."}
    first, later = (
        DecodeRequest(policy.render([system, {"role": "user", "content": text}], 6)[0], GREEDY)
        for text in ("hello there", "OFFER 120 for the bike")
    )
    shared = common_prefix_length(np.asarray(first.prompt_ids), np.asarray(later.prompt_ids))
    cache = PrefixCache(max_bytes=10**8)
    batch = RunningBatch(policy.model, policy.tokenizer, policy.eos_ids, cache)
    batch.add([first], ["first"])  # prefilled, not one token decoded yet
    entry, reused = cache.lookup(None, later.prompt_ids)
    assert entry is not None and reused == shared > 10
    while batch:
        batch.step()
    assert len(cache) == 1 and len(cache.lookup(None, first.prompt_ids)[0].ids) > len(first.prompt_ids)
