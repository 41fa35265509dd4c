"""GrowingLayer holds exactly what transformers' DynamicLayer holds, through growth, row selection and crops."""

from __future__ import annotations

import torch
from transformers import DynamicLayer

from langgraph_omar.serving.kv_cache import GrowingLayer, growing_cache


def test_growing_layer_matches_dynamic_layer():
    GrowingLayer.headroom = 3  # force reallocations within a few steps
    try:
        ours, reference = GrowingLayer(), DynamicLayer()
        torch.manual_seed(0)
        steps = [5, 1, 1, 1, 1, 2, 1]  # a prefill, then decoding steps; rows leave after the third
        for i, length in enumerate(steps):
            batch = 4 if i < 3 else 2
            k, v = torch.randn(batch, 2, length, 8), torch.randn(batch, 2, length, 8)
            got, want = ours.update(k, v), reference.update(k, v)
            assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
            if i == 2:
                for layer in (ours, reference):
                    layer.batch_select_indices(torch.tensor([0, 3]))
        ours.crop(-2)
        reference.crop(-2)
        k, v = torch.randn(2, 2, 1, 8), torch.randn(2, 2, 1, 8)
        assert all(torch.equal(a, b) for a, b in zip(ours.update(k, v), reference.update(k, v), strict=True))
        assert ours.get_seq_length() == reference.get_seq_length() == sum(steps) - 2 + 1
    finally:
        GrowingLayer.headroom = 128


def test_growing_cache_starts_from_a_prefix():
    prefix = [(torch.ones(2, 1, 3, 4), torch.zeros(2, 1, 3, 4)) for _ in range(2)]
    cache = growing_cache(prefix)
    assert cache.get_seq_length() == 3 and all(isinstance(layer, GrowingLayer) for layer in cache.layers)
    keys, _ = cache.update(torch.full((2, 1, 1, 4), 2.0), torch.zeros(2, 1, 1, 4), 1)
    assert keys.shape == (2, 1, 4, 4) and keys[:, :, -1].eq(2).all() and keys[:, :, :3].eq(1).all()
