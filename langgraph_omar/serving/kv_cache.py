"""A KV cache whose layers grow in place: one column written per decoding step, not the whole cache copied.

transformers' `DynamicLayer` appends with `torch.cat`, which copies every cached key and value at every step:
about a quarter of a batch-32 decoding step of the default model on a CPU. `GrowingLayer` keeps them in buffers
with room to spare and hands out views; everything else (masks, row selection, cropping) is `DynamicLayer`'s.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache, DynamicLayer


class GrowingLayer(DynamicLayer):
    """`DynamicLayer` with keys and values stored as views (B, heads, length, head_dim) of larger buffers."""

    headroom = 128  # positions allocated beyond what is needed, so a reallocation comes every 128 steps

    def __init__(self) -> None:
        super().__init__()
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.get_seq_length()
        end = start + key_states.shape[-2]
        keys, values = self._room_for(end, key_states)
        keys[..., start:end, :] = key_states
        values[..., start:end, :] = value_states
        self.keys, self.values = keys[..., :end, :], values[..., :end, :]
        return self.keys, self.values

    def _room_for(self, end: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Buffers holding the current keys and values with room up to `end`: the same ones while they fit
        (and `keys` is still their view: row selection makes new tensors), else new ones with a copy."""
        if self._buffers is not None:
            keys, _ = self._buffers
            current = self.keys is not None and (
                self.keys.numel() == 0 or self.keys.data_ptr() == keys.data_ptr()
            )
            if current and keys.shape[0] == like.shape[0] and keys.shape[-2] >= end:
                return self._buffers
        shape = (*like.shape[:-2], end + self.headroom, like.shape[-1])
        keys, values = like.new_empty(shape), like.new_empty(shape)
        start = self.get_seq_length()
        if start and self.keys is not None and self.values is not None:
            keys[..., :start, :] = self.keys
            values[..., :start, :] = self.values
        self._buffers = (keys, values)
        return self._buffers


def growing_cache(prefix: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> DynamicCache:
    """A `DynamicCache` of `GrowingLayer`s, filled with `prefix` (per layer, keys and values (B, heads, P,
    head_dim)) when given."""
    cache = DynamicCache()
    cache.layer_class_to_replicate = GrowingLayer
    for layer, (keys, values) in enumerate(prefix or []):
        cache.update(keys, values, layer)
    return cache


def cast_cache(cache: DynamicCache, dtype: torch.dtype) -> None:
    """Keys and values of every layer in `dtype` (a bf16 prefill's cache before a float32 decode); a layer
    already in `dtype` is left as it is."""
    for layer in cache.layers:
        if not isinstance(layer, DynamicLayer) or layer.keys is None or layer.values is None:
            continue
        if layer.keys.dtype != dtype:
            layer.keys, layer.values = layer.keys.to(dtype), layer.values.to(dtype)
            if isinstance(layer, GrowingLayer):
                layer._buffers = None  # the next step allocates buffers of the new type
