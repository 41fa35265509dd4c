"""Decoding passes the KV cache under the name the installed transformers takes, so no deprecation warning
(`past_key_values`, a FutureWarning on every forward in transformers 5.x) buries the project's own warnings."""

from __future__ import annotations

import warnings

from adapter_helpers import save_random_adapter

from langgraph_omar.serving.decoding import DecodeRequest, decode_batch
from langgraph_omar.serving.sampling import SamplingParams
from langgraph_omar.testing import tiny_model


def test_a_batch_with_and_without_an_adapter_decodes_without_future_warnings(policy, tmp_path):
    policy.ensure_adapter(str(save_random_adapter(tiny_model(0), tmp_path / "adapter")))
    prompt = policy.tokenizer("Hello there")["input_ids"]
    params = SamplingParams(temperature=0, max_new_tokens=3)
    for adapters in ([None], [None, policy.ensure_adapter(str(tmp_path / "adapter"))]):
        requests = [DecodeRequest(prompt, params, adapter) for adapter in adapters]
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            results = decode_batch(policy.model, policy.tokenizer, requests, policy.eos_ids)
        assert len(results) == len(adapters)
