from __future__ import annotations

import threading

import pytest
import torch
from peft import LoraConfig, get_peft_model

from langgraph_omar.errors import OmarError
from langgraph_omar.serving import decoding
from langgraph_omar.serving.models import resolve_model_path
from langgraph_omar.serving.sampling import SamplingParams, truncate
from langgraph_omar.testing import tiny_model, tiny_policy

GREEDY = SamplingParams(temperature=0, max_new_tokens=12)


def prompts(policy, n):
    texts = ["hello", "OFFER 120 for the bike please", "vote alice", "the quick brown fox jumps over it"]
    return [policy.render([{"role": "user", "content": texts[i % 4] * (1 + i % 3)}], 12)[0] for i in range(n)]


def recomputed_logprobs(model, prompt_ids, completion_ids, temperature=1.0):
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1] / temperature
    return torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(completion_ids)[:, None]).squeeze(-1)


def test_greedy_batched_equals_unbatched(policy):
    batch = prompts(policy, 6)
    alone = [policy.generate(p, GREEDY).completion_ids for p in batch]
    futures = [policy.submit(p, GREEDY) for p in batch]
    together = [f.result().completion_ids for f in futures]
    assert together == alone
    assert all(len(c) > 0 for c in alone)


def test_logprobs_are_the_tempered_sampling_distribution(policy):
    for temperature in (1.0, 0.7):
        params = SamplingParams(temperature=temperature, max_new_tokens=10, seed=3)
        for p in prompts(policy, 3):
            record = policy.generate(p, params)
            expected = recomputed_logprobs(
                policy.model, record.prompt_ids, record.completion_ids, temperature
            )
            assert torch.allclose(torch.tensor(record.logprobs), expected, atol=1e-4)
            assert record.prompt_ids == p


def test_top_p_truncation_does_not_change_recorded_logprobs(policy):
    record = policy.generate(
        prompts(policy, 1)[0], SamplingParams(temperature=1.0, top_p=0.5, max_new_tokens=8, seed=0)
    )
    expected = recomputed_logprobs(policy.model, record.prompt_ids, record.completion_ids)
    assert torch.allclose(torch.tensor(record.logprobs), expected, atol=1e-4)


def test_seed_reproducible_whatever_the_batch(policy):
    p = prompts(policy, 1)[0]
    params = SamplingParams(temperature=1.0, max_new_tokens=10, seed=42)
    alone = policy.generate(p, params).completion_ids
    others = [policy.submit(q, SamplingParams(temperature=1.0, max_new_tokens=5)) for q in prompts(policy, 3)]
    mine = policy.submit(p, params)
    assert mine.result().completion_ids == alone
    assert all(o.result() for o in others)


def test_truncate_keeps_nucleus_and_top_k():
    logprobs = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.5, 0.3, 0.15, 0.05]]))
    out = truncate(logprobs, top_p=torch.tensor([0.7, 1.0]), top_k=torch.tensor([0, 2]))
    # row 0: mass before token k is 0, .5, .8, .95: tokens with mass-before >= .7 are dropped -> keep 2
    assert torch.isfinite(out[0]).tolist() == [True, True, False, False]
    assert torch.isfinite(out[1]).tolist() == [True, True, False, False]


def test_stop_strings_and_length(policy):
    p = prompts(policy, 1)[0]
    free = policy.generate(p, SamplingParams(temperature=0, max_new_tokens=20))
    assert free.finish_reason in ("length", "stop")
    if free.finish_reason == "length":
        assert len(free.completion_ids) == 20
    stop = free.text[3:5]
    cut = policy.generate(p, SamplingParams(temperature=0, max_new_tokens=20, stop=(stop,)))
    assert cut.finish_reason == "stop_string"
    assert cut.text == free.text[: free.text.find(stop)]
    decoded = policy.tokenizer.decode(cut.completion_ids, skip_special_tokens=True)
    assert decoded.startswith(cut.text) and stop in decoded


def test_context_overflow_drops_oldest_turns_and_records_it():
    policy = tiny_policy("tiny-ctx", register=False)
    policy.context_window = 80
    messages = [{"role": "system", "content": "be brief"}] + [
        {"role": "user", "content": f"message number {i} hello there"} for i in range(8)
    ]
    ids, dropped = policy.render(messages, max_new_tokens=10)
    assert dropped > 0 and len(ids) + 10 <= 80
    assert policy.tokenizer.decode(ids).startswith("<|im_start|>system\nbe brief")
    with pytest.raises(OmarError, match="exceeds the context window"):
        policy.render([{"role": "user", "content": "hello " * 200}], max_new_tokens=10)


def test_out_of_memory_splits_the_batch(policy, monkeypatch):
    real = decoding.next_logits
    sizes = []

    def fake(model, ids, *args):
        sizes.append(ids.shape[0])
        if ids.shape[0] > 2:
            raise torch.OutOfMemoryError("simulated")
        return real(model, ids, *args)

    batch = prompts(policy, 6)
    expected = [
        decoding.decode_batch(
            policy.model, policy.tokenizer, [decoding.DecodeRequest(p, GREEDY)], policy.eos_ids
        )[0]
        for p in batch
    ]
    monkeypatch.setattr(decoding, "next_logits", fake)
    policy.max_wait_s = 0.2
    futures = [policy.submit(p, GREEDY) for p in batch]
    assert [f.result().completion_ids for f in futures] == [e.completion_ids for e in expected]
    assert sizes[:3] == [6, 3, 1]  # the whole batch failed, then halves were tried, recursively


def test_concurrent_callers_are_coalesced(policy, monkeypatch):
    real = decoding.next_logits
    sizes = []
    monkeypatch.setattr(
        decoding,
        "next_logits",
        lambda model, ids, *args: sizes.append(ids.shape[0]) or real(model, ids, *args),
    )
    policy.max_wait_s = 0.2
    barrier = threading.Barrier(8)
    results = []

    def call(p):
        barrier.wait()
        results.append(policy.generate(p, GREEDY))

    threads = [threading.Thread(target=call, args=(p,)) for p in prompts(policy, 8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and max(sizes) > 1


def save_adapter(tmp_path, model, name="a", seed=1):
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(tmp_path / name)
    return tmp_path / name


def test_mixed_adapter_batch_matches_separate_calls(policy, tmp_path):
    path = save_adapter(tmp_path, tiny_model(seed=0))
    p = prompts(policy, 1)[0]
    base_alone = policy.generate(p, GREEDY).completion_ids
    name = policy.load_adapter(path, name="trained")
    assert policy.adapter_versions["trained"] == 1
    adapted_alone = policy.generate(p, GREEDY, adapter=name)
    assert adapted_alone.adapter == "trained" and adapted_alone.adapter_version == 1
    futures = [policy.submit(p, GREEDY, adapter=a) for a in (None, name, None, name)]
    mixed = [f.result().completion_ids for f in futures]
    assert mixed == [base_alone, adapted_alone.completion_ids] * 2
    assert base_alone != adapted_alone.completion_ids
    expected = recomputed_logprobs(policy.model, p, adapted_alone.completion_ids)  # adapter active by default
    assert torch.allclose(torch.tensor(adapted_alone.logprobs), expected, atol=1e-4)


def test_bad_adapters_give_one_line_errors(policy, tmp_path):
    with pytest.raises(OmarError, match="adapter not found"):
        policy.load_adapter(tmp_path / "missing")
    other = save_adapter(tmp_path, tiny_model(hidden_size=64), name="other")
    with pytest.raises(OmarError, match="does not fit model") as info:
        policy.load_adapter(other)
    assert "\n" not in str(info.value)
    bin_only = save_adapter(tmp_path, tiny_model(), name="bin")
    (bin_only / "adapter_model.safetensors").rename(bin_only / "adapter_model.bin")
    with pytest.raises(OmarError, match="only safetensors"):
        policy.load_adapter(bin_only)
    with pytest.raises(OmarError, match="not loaded"):
        policy.submit([1, 2], GREEDY, adapter="nope")


def test_unknown_model_is_one_line():
    with pytest.raises(OmarError, match="unknown model") as info:
        resolve_model_path("no-such-model")
    assert "\n" not in str(info.value) and "smollm2-135m-instruct" in str(info.value)


def test_batched_draws_follow_each_rows_distribution_and_seed():
    """Each row samples its own distribution (frequencies over many seeds; a zero-probability token never), and a
    seeded row's token depends on its seed alone, not on the other rows."""
    from langgraph_omar.serving.sampling import _draw

    probs = torch.tensor([[0.5, 0.0, 0.3, 0.2], [0.0, 0.0, 1.0, 0.0], [0.1, 0.6, 0.0, 0.3]])
    counts = torch.zeros(3, 4)
    for seed in range(3000):
        drawn = _draw(probs, [torch.Generator().manual_seed(seed), None, torch.Generator().manual_seed(seed)])
        counts[torch.arange(3), drawn] += 1
    frequencies = counts / 3000
    assert torch.allclose(frequencies, probs, atol=0.03)
    assert counts[probs == 0].sum() == 0
    alone = _draw(probs[2:] * 7, [torch.Generator().manual_seed(11)])  # unnormalised, and alone
    beside = _draw(probs, [None, None, torch.Generator().manual_seed(11)])
    assert alone[0] == beside[2]


def test_a_prefill_hands_the_output_head_a_contiguous_last_position(policy):
    """The (B, 1, H) last-position view of a multi-row prefill is copied before the head: as a strided view,
    matmul would materialise the head weight once per row."""
    seen = []
    head = policy.model.get_output_embeddings()
    hook = head.register_forward_pre_hook(lambda _, args: seen.append(args[0].is_contiguous()))
    try:
        futures = [policy.submit(p, GREEDY) for p in prompts(policy, 3)]
        together = [f.result().completion_ids for f in futures]
    finally:
        hook.remove()
    assert seen and all(seen)
    assert together == [policy.generate(p, GREEDY).completion_ids for p in prompts(policy, 3)]
