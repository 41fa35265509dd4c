"""Rows join a running batch and leave it as they finish: a short request that arrives while a long one decodes
finishes first, every joined row decodes what it would decode alone (seeds, adapters, grammars, reused
prefixes), and no row decodes across a weight change. Arrivals are triggered from the long row's own token
callback, so "while it decodes" is a fact of the test, not a timing."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import numpy as np
import torch
from test_engine import save_adapter

from langgraph_omar.serving import decoding
from langgraph_omar.serving.constraints import Constraint
from langgraph_omar.serving.decoding import DecodeRequest, RunningBatch, decode_batch
from langgraph_omar.serving.kv_cache import growing_cache, keep_rows, pack_rows
from langgraph_omar.serving.prefix_cache import PrefixCache
from langgraph_omar.serving.sampling import SamplingParams
from langgraph_omar.serving.stops import IncrementalText, StopWatch
from langgraph_omar.testing import tiny_model, tiny_tokenizer

LONG = SamplingParams(temperature=1.0, max_new_tokens=40, seed=7)
SCORE = {
    "type": "object",
    "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 9}},
    "required": ["score"],
    "additionalProperties": False,
}


def prompt(policy, text: str) -> list[int]:
    return policy.render([{"role": "user", "content": text}], 40)[0]


def on_token_number(n: int, action) -> Any:
    """A token callback that runs `action` once, when the n-th token of its row was sampled."""
    seen = []

    def callback(token: int) -> None:
        seen.append(token)
        if len(seen) == n:
            action()

    return callback


def test_a_request_arriving_during_a_long_decode_joins_and_finishes_first(policy, monkeypatch):
    policy.eos_ids = set()  # only the length ends a row: the long one really is long
    rows_per_step = []
    real = decoding.next_logits
    monkeypatch.setattr(
        decoding,
        "next_logits",
        lambda model, ids, *rest: rows_per_step.append(tuple(ids.shape)) or real(model, ids, *rest),
    )
    futures: dict[str, Future] = {}
    short_done_first = []
    short = SamplingParams(temperature=1.0, max_new_tokens=3, seed=1)
    arrive = on_token_number(
        5, lambda: futures.setdefault("short", policy.submit(prompt(policy, "hi"), short))
    )
    last = on_token_number(40, lambda: short_done_first.append(futures["short"].done()))
    futures["long"] = policy.submit(
        prompt(policy, "a long story please"), LONG, on_token=lambda t: (arrive(t), last(t))
    )
    assert len(futures["long"].result(timeout=120).completion_ids) == 40
    assert short_done_first == [True]  # done before the long row sampled its last token
    assert len(futures["short"].result(timeout=120).completion_ids) == 3
    # one prefill each; the short row decoded beside the long one (2 rows), then the long one went on alone
    one_token_steps = [rows for rows, width in rows_per_step if width == 1]
    assert one_token_steps.count(2) == 2 and len(one_token_steps) == 39


def test_rows_that_join_decode_what_they_decode_alone(policy, tmp_path):
    adapter = policy.load_adapter(save_adapter(tmp_path, tiny_model(seed=0)), name="trained")
    score = Constraint.json_schema(SCORE)
    joiners = [
        (
            "seeded",
            prompt(policy, "OFFER 120"),
            SamplingParams(temperature=1.0, max_new_tokens=12, seed=3),
            None,
            None,
        ),
        (
            "adapter",
            prompt(policy, "vote alice"),
            SamplingParams(temperature=0.7, max_new_tokens=9, seed=4),
            adapter,
            None,
        ),
        (
            "greedy",
            prompt(policy, "the quick brown fox"),
            SamplingParams(temperature=0, max_new_tokens=7),
            None,
            None,
        ),
        (
            "grammar",
            prompt(policy, "score it"),
            SamplingParams(temperature=1.0, max_new_tokens=20, seed=5),
            None,
            score,
        ),
    ]
    alone = {
        name: policy.generate(ids, params, adapter=a, constraint=c) for name, ids, params, a, c in joiners
    }
    long_alone = policy.generate(prompt(policy, "a long story please"), LONG)
    futures: dict[str, Future] = {}

    def arrive() -> None:  # two arrive at the 3rd token of the long row, two at its 6th
        for name, ids, params, a, c in joiners[: 2 if "seeded" not in futures else 4]:
            futures.setdefault(name, policy.submit(ids, params, adapter=a, constraint=c))

    callback = on_token_number(3, arrive)
    second = on_token_number(6, arrive)
    futures["long"] = policy.submit(
        prompt(policy, "a long story please"), LONG, on_token=lambda t: (callback(t), second(t))
    )
    futures["long"].result(timeout=120)
    assert set(futures) == {"long", *alone}
    for name, record in alone.items():
        got = futures[name].result(timeout=120)
        assert got.completion_ids == record.completion_ids, name
        assert np.allclose(got.logprobs, record.logprobs, atol=1e-5), name
        if record.extra:
            assert np.allclose(got.extra["masked_logprobs"], record.extra["masked_logprobs"], atol=1e-5)
    assert futures["long"].result().completion_ids == long_alone.completion_ids


def test_a_next_turn_that_joins_reuses_its_prefix(policy):
    first = policy.generate(prompt(policy, "hello there"), SamplingParams(temperature=0, max_new_tokens=6))
    extra = policy.tokenizer(" and then?", add_special_tokens=False)["input_ids"]
    turn = first.prompt_ids + first.completion_ids + extra
    params = SamplingParams(temperature=1.0, max_new_tokens=6, seed=2)
    (full,) = decode_batch(policy.model, policy.tokenizer, [DecodeRequest(turn, params)], policy.eos_ids)
    assert policy.prefix_cache is not None
    hits = policy.prefix_cache.hits
    futures: dict[str, Future] = {}
    join = on_token_number(2, lambda: futures.setdefault("turn", policy.submit(turn, params)))
    policy.submit(prompt(policy, "a long story please"), LONG, on_token=join).result(timeout=120)
    got = futures["turn"].result(timeout=120)
    assert policy.prefix_cache.hits - hits >= len(first.prompt_ids)  # the new turn prefilled only what is new
    assert got.completion_ids == full.completion_ids
    assert np.allclose(got.logprobs, full.logprobs, atol=1e-5)


def test_no_row_decodes_across_a_weight_change(policy):
    futures: dict[str, Future] = {}
    seen_by_trainer: list[tuple[bool, bool]] = []

    def train() -> None:
        with policy.exclusive():
            seen_by_trainer.append((futures["long"].done(), futures["late"].done()))

    trainer = threading.Thread(target=train)

    def trainer_asks() -> (
        None
    ):  # at the long row's 4th token a trainer asks for the model, then a request arrives
        trainer.start()
        while not policy._writers:
            threading.Event().wait(0.001)
        futures["late"] = policy.submit(prompt(policy, "hi"), SamplingParams(temperature=0, max_new_tokens=2))

    futures["long"] = policy.submit(
        prompt(policy, "a long story please"), LONG, on_token=on_token_number(4, trainer_asks)
    )
    futures["long"].result(timeout=120)
    trainer.join(timeout=120)
    futures["late"].result(timeout=120)
    # the running row finished on the old weights; the late request waited and decoded on the new ones
    assert seen_by_trainer == [(True, False)]


def test_pack_rows_aligns_rows_of_two_caches_to_the_right():
    a = growing_cache([(torch.arange(2 * 5, dtype=torch.float).reshape(2, 1, 5, 1), torch.zeros(2, 1, 5, 1))])
    b = growing_cache([(torch.full((1, 1, 3, 1), 9.0), torch.zeros(1, 1, 3, 1))])
    packed = pack_rows([(a, torch.tensor([1]), 2), (b, None, 0)], 4)
    keys = packed.layers[0].keys
    assert keys is not None and keys.shape == (2, 1, 4, 1)
    assert keys[0, 0, :, 0].tolist() == [
        0.0,
        7.0,
        8.0,
        9.0,
    ]  # row 1 of a from position 2, one zero on the left
    assert keys[1, 0, :, 0].tolist() == [0.0, 9.0, 9.0, 9.0]
    new_keys, _ = packed.update(torch.ones(2, 1, 1, 1), torch.ones(2, 1, 1, 1), 0)
    assert new_keys.shape == (2, 1, 5, 1) and new_keys[:, 0, -1, 0].tolist() == [1.0, 1.0]


def test_keep_rows_moves_the_kept_rows_to_the_front_of_the_same_buffers():
    torch.manual_seed(0)
    keys, values = torch.randn(4, 2, 3, 5), torch.randn(4, 2, 3, 5)
    cache = growing_cache([(keys, values)])
    buffer = cache.layers[0].keys.data_ptr()  # type: ignore[union-attr]
    keep_rows(cache, [1, 3])
    layer = cache.layers[0]
    assert layer.keys is not None and layer.values is not None
    assert torch.equal(layer.keys, keys[[1, 3]]) and torch.equal(layer.values, values[[1, 3]])
    step = torch.randn(2, 2, 1, 5)
    grown, _ = cache.update(step, step, 0)
    assert grown.data_ptr() == buffer  # no copy into new buffers, now or at the next step
    assert torch.equal(grown, torch.cat([keys[[1, 3]], step], dim=2))


def test_incremental_text_is_the_full_decode_and_stops_are_seen_when_they_appear():
    tokenizer = tiny_tokenizer()
    text = 'Hello there, café ☕ {"name": "x"} OFFER 120. ACCEPT.<|im_end|> quick brown fox'
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    incremental = IncrementalText(tokenizer)
    for n, token in enumerate(ids, start=1):
        incremental.push(token)
        full = tokenizer.decode(ids[:n], skip_special_tokens=True)
        assert full.startswith(incremental.text) and len(full) - len(incremental.text) <= 1
    assert incremental.text == tokenizer.decode(ids, skip_special_tokens=True)
    watch = StopWatch(tokenizer, ("ACCEPT", "zzz"))
    seen = [watch.push(t) for t in ids]
    first = seen.index(True)
    assert "ACCEPT" in tokenizer.decode(ids[: first + 1]) and "ACCEPT" not in tokenizer.decode(ids[:first])


@torch.inference_mode()
def test_a_running_batch_frees_columns_no_row_uses(policy):
    """Rows that leave take their columns with them: the cache keeps only what the remaining rows need."""
    cache = PrefixCache(10**8)
    batch = RunningBatch(policy.model, policy.tokenizer, set(), cache)
    long_prompt = prompt(policy, "the quick brown fox jumps over it " * 4)
    batch.add([DecodeRequest(long_prompt, SamplingParams(temperature=0, max_new_tokens=2))], ["long"])
    batch.add(
        [DecodeRequest(prompt(policy, "hi"), SamplingParams(temperature=0, max_new_tokens=5))], ["short"]
    )
    assert batch.mask.shape[1] == len(long_prompt)
    finished = batch.step() + batch.step()
    assert [key for key, _ in finished] == ["long"] and len(batch) == 1
    assert batch.mask.shape[1] == len(prompt(policy, "hi")) + 2 and bool(batch.mask.all())
    while batch:
        finished += batch.step()
    assert [key for key, _ in finished] == ["long", "short"]
