"""Keys and values of recently prefilled prompts and finished sequences, reused by later prompts that start
the same way.

A role's next prompt repeats its previous prompt and reply before the new turn, and the episodes of a
self-play group open with the same prompt, so most of a multi-turn rollout's prefill was computed before.
transformers keeps a KV cache only within one `generate` call (vLLM and SGLang share prefixes across
requests, but they are serving stacks of their own), so this small store is written here: the engine starts
each request from its longest common token prefix with a stored sequence and prefills only the rest. A prompt
is stored as soon as it is prefilled (a group's other episodes, arriving while it decodes, reuse its system
prompt: 24% fewer prefilled tokens in a demo iteration), and replaced by its finished sequence.

Entries belong to one adapter (keys and values depend on the weights), are evicted least recently used beyond
a byte budget, and are all dropped by `clear()` whenever weights change.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class CachedSequence:
    """One stored sequence: `ids` (L,) and, per layer, keys and values of shape (kv_heads, L, head_dim)."""

    ids: np.ndarray
    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


def common_prefix_length(a: np.ndarray, b: np.ndarray) -> int:
    """Number of leading positions where the 1-D arrays a and b agree."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


class PrefixCache:
    """An LRU store of finished sequences' KV, keyed by (adapter, token ids); thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self.hits = 0  # prompt tokens served from the store
        self.misses = 0  # prompt tokens prefilled
        self._entries: OrderedDict[tuple[str | None, bytes], CachedSequence] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, adapter: str | None, prompt_ids: list[int]) -> tuple[CachedSequence | None, int]:
        """The stored sequence sharing the longest prefix with `prompt_ids`, and how many of its positions to
        reuse: at most len(prompt_ids) - 1, so at least one prompt token is fed to get the next logits."""
        prompt = np.asarray(prompt_ids, dtype=np.int64)
        best, best_length = None, 0
        with self._lock:
            for (entry_adapter, key), entry in self._entries.items():
                if entry_adapter == adapter:
                    length = common_prefix_length(prompt, entry.ids)
                    if length > best_length:
                        best, best_length = (entry_adapter, key), length
            reused = min(best_length, len(prompt_ids) - 1)
            self.hits += reused
            self.misses += len(prompt_ids) - reused
            if best is None or reused == 0:
                return None, 0
            self._entries.move_to_end(best)
            return self._entries[best], reused

    def store(self, adapter: str | None, sequence: CachedSequence) -> None:
        """Keep `sequence`, dropping stored ones it extends (they are its prefixes) and the least recently
        used beyond the byte budget."""
        if sequence.nbytes > self.max_bytes:
            return
        key = (adapter, sequence.ids.tobytes())
        with self._lock:
            for old_key in list(self._entries):
                old = self._entries[old_key]
                if old_key[0] == adapter and common_prefix_length(sequence.ids, old.ids) == len(old.ids):
                    self._drop(old_key)
            self._entries[key] = sequence
            self.nbytes += sequence.nbytes
            while self.nbytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.nbytes = 0

    def _drop(self, key: tuple[str | None, bytes]) -> None:
        self.nbytes -= self._entries.pop(key).nbytes
