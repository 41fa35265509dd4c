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

    def keep_front(self, rows: list[int]) -> None:
        """Keep only batch rows `rows` (ascending), moved to the front of the same buffers: only the rows after
        the first one that leaves are copied, and the next `update` still writes in place."""
        assert self.keys is not None and self.values is not None
        in_buffers = self._keys_in_buffers()
        for tensor in (self.keys, self.values):
            for to, row in enumerate(rows):
                if to != row:  # to < row, both ascending: a row is read before anything overwrites it
                    tensor[to] = tensor[row]
        if in_buffers and self._buffers is not None:
            self._buffers = (self._buffers[0][: len(rows)], self._buffers[1][: len(rows)])
        self.keys, self.values = self.keys[: len(rows)], self.values[: len(rows)]

    def _keys_in_buffers(self) -> bool:
        """Whether `keys` is still a view of the buffers (row selection by transformers makes new tensors)."""
        return (
            self._buffers is not None
            and self.keys is not None
            and (self.keys.numel() == 0 or self.keys.data_ptr() == self._buffers[0].data_ptr())
        )

    def _room_for(self, end: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Buffers holding the current keys and values with room up to `end`: the same ones while they fit
        (and `keys` is still their view), else new ones with a copy."""
        if self._buffers is not None and self._keys_in_buffers():
            keys, _ = self._buffers
            if keys.shape[0] == like.shape[0] and keys.shape[-2] >= end:
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


def _packed_layer(parts: list[tuple[torch.Tensor, torch.Tensor]], width: int) -> GrowingLayer:
    """One `GrowingLayer` holding the rows of every part (keys and values (B_i, heads, L_i, head_dim), L_i <=
    width) one after the other, each right-aligned in `width` positions; the positions left of a shorter part
    are zeros (the mask hides them; zeros, not garbage, because a hidden NaN would still poison attention).
    The headroom after `width` is left unset: every position there is written before it is read."""
    keys, values = parts[0]
    rows = sum(k.shape[0] for k, _ in parts)
    shape = (rows, *keys.shape[1:-2], width + GrowingLayer.headroom, keys.shape[-1])
    key_buffer, value_buffer = keys.new_empty(shape), values.new_empty(shape)
    start = 0
    for k, v in parts:
        end, gap = start + k.shape[0], width - k.shape[-2]
        for buffer, part in ((key_buffer, k), (value_buffer, v)):
            buffer[start:end, ..., :gap, :] = 0
            buffer[start:end, ..., gap:width, :] = part
        start = end
    layer = GrowingLayer()
    layer.lazy_initialization(keys, values)
    layer._buffers = (key_buffer, value_buffer)
    layer.keys, layer.values = key_buffer[..., :width, :], value_buffer[..., :width, :]
    return layer


def is_growing(cache: DynamicCache) -> bool:
    """Whether every layer of `cache` is a `GrowingLayer` (the model kept the cache's own layer kind), so rows
    can be packed and joined by position."""
    return bool(cache.layers) and all(isinstance(layer, GrowingLayer) for layer in cache.layers)


def pack_rows(caches: list[tuple[DynamicCache, torch.Tensor | None, int]], width: int) -> DynamicCache:
    """A new growing cache of the chosen rows of each cache, one cache after the other, every part right-aligned
    in `width` positions: one copy of what is kept, however many rows leave or join.

    caches: (cache, rows, start) per part: `rows` (R,) the batch rows kept (None: all), `start` the first
    position kept (the positions before it are masked out for every kept row). All caches `is_growing`.
    """
    layers = []
    for index in range(len(caches[0][0].layers)):
        parts = []
        for cache, rows, start in caches:
            layer = cache.layers[index]
            assert isinstance(layer, GrowingLayer) and layer.keys is not None and layer.values is not None
            keys, values = layer.keys, layer.values
            keys, values = keys[..., start:, :], values[..., start:, :]
            parts.append((keys, values) if rows is None else (keys[rows], values[rows]))
        layers.append(_packed_layer(parts, width))
    packed = DynamicCache()
    packed.layer_class_to_replicate = GrowingLayer
    packed.layers = layers  # type: ignore[assignment]
    return packed


def keep_rows(cache: DynamicCache, rows: list[int]) -> None:
    """Keep only the batch rows `rows` (ascending) of a growing cache, each layer in place
    (`GrowingLayer.keep_front`): `pack_rows` would copy every kept row into new buffers, ~6x slower (measured)
    for a row leaving a 15-row batch."""
    for layer in cache.layers:
        assert isinstance(layer, GrowingLayer)
        layer.keep_front(rows)


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
