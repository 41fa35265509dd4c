"""Rows that start with the same tokens: find them, order micro-batches by them, run their prefix once.

A multi-turn self-play batch is mostly prompt: in the demo's negotiation a turn is ~250 prompt tokens and ~20
completion tokens, and the turns of one scenario and role (the episodes of a group, every turn of an agent)
begin with the same ~180-token system prompt. Run as separate rows, the update spends most of its forward and
backward on copies of that prefix. Here a micro-batch whose rows share a prefix runs it once (batch 1, with
grad), repeats its keys and values for the rows, and runs only the rest of each row on top; the rows'
gradients flow back into the one prefix, so the result is the full forward's, up to float rounding.
No library does this for training (vLLM and SGLang share prefixes at inference only), hence by hand.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from langgraph_omar.serving.prefix_cache import common_prefix_length

MIN_SHARED_TOKENS = 32  # below this a second forward call costs more than the tokens it saves


def shared_prefix_length(input_ids: Tensor, lengths: Tensor, minimum: int = MIN_SHARED_TOKENS) -> int:
    """Tokens every row begins with, at most the shortest row's length - 1 (each row keeps a token of its own);
    0 for a single row or fewer than `minimum` shared tokens. input_ids (B, T), lengths (B,) -> int."""
    if input_ids.shape[0] < 2:
        return 0
    differs = (input_ids != input_ids[:1]).any(0).nonzero()
    shared = int(differs[0]) if len(differs) else input_ids.shape[1]
    shared = min(shared, int(lengths.min()) - 1)
    return shared if shared >= minimum else 0


def prefix_clusters(sequences: Sequence[Sequence[int]], minimum: int = MIN_SHARED_TOKENS) -> list[list[int]]:
    """Indices of `sequences` in lexicographic order, cut wherever two neighbours share fewer than `minimum`
    tokens: each cluster's members begin alike, and members of a cluster are adjacent."""
    order = sorted(range(len(sequences)), key=lambda i: tuple(sequences[i]))
    arrays = [np.asarray(s, dtype=np.int64) for s in sequences]
    clusters: list[list[int]] = []
    for i in order:
        if clusters and common_prefix_length(arrays[clusters[-1][-1]], arrays[i]) >= minimum:
            clusters[-1].append(i)
        else:
            clusters.append([i])
    return clusters


def cluster_order(
    sequences: Sequence[Sequence[int]], rows: Sequence[int], generator: torch.Generator
) -> list[int]:
    """`rows` grouped by shared prefix, the clusters in random order (drawn from `generator`), each cluster's
    rows lexicographic: the optimizer steps cut from this order hold whole clusters where they can."""
    clusters = prefix_clusters([sequences[r] for r in rows])
    shuffled = torch.randperm(len(clusters), generator=generator).tolist()
    return [rows[i] for c in shuffled for i in clusters[c]]
