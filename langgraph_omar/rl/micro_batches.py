"""An update's rows dealt into optimizer steps, processes and micro-batches (pure; every process draws the same)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from langgraph_omar.rl.shared_prefix import cluster_order


@dataclass(frozen=True)
class Step:
    """One optimizer step: its rows on every process, and per process its micro-batches (some may be empty)."""

    rows: list[int]
    micro_batches: list[list[list[int]]]  # [process][micro-batch] -> rows


def plan_steps(
    rows: Sequence[int],
    prompts: Sequence[Sequence[int]],
    lengths: Sequence[int],
    *,
    micro_batch_size: int,
    accumulation: int,
    processes: int,
    epochs: int,
    seed: int,
    share_prefixes: bool,
) -> list[Step]:
    """Every epoch's optimizer steps, in order. Each epoch shuffles `rows` (sharing prefixes: shuffles the
    clusters of rows whose prompts begin alike, `shared_prefix.cluster_order`) with a generator seeded by
    `seed`, cuts `micro_batch_size * accumulation * processes` rows per step and sorts each step's rows (by
    length: less padding; sharing prefixes: by prompt, so micro-batches share one), then deals them out to the
    processes in that order (their shares are alike), `accumulation` micro-batches each.
    prompts, lengths: indexed by row."""
    generator = torch.Generator().manual_seed(seed)
    per_step = micro_batch_size * accumulation * processes
    steps = []
    for _ in range(epochs):
        if share_prefixes:
            order = cluster_order(prompts, list(rows), generator)
        else:
            order = [rows[i] for i in torch.randperm(len(rows), generator=generator).tolist()]
        for start in range(0, len(order), per_step):
            chunk = order[start : start + per_step]
            if share_prefixes:
                chunk = sorted(chunk, key=lambda r: tuple(prompts[r]))
            else:
                chunk = sorted(chunk, key=lambda r: lengths[r])
            dealt = [chunk[p::processes] for p in range(processes)]
            steps.append(
                Step(
                    chunk,
                    [
                        [
                            share[i * micro_batch_size : (i + 1) * micro_batch_size]
                            for i in range(accumulation)
                        ]
                        for share in dealt
                    ],
                )
            )
    return steps


def first_epoch_micro_batches(steps: Sequence[Step], rows: int, rows_per_step: int) -> list[list[int]]:
    """The first epoch's non-empty micro-batches of every process, in the order the update runs them."""
    first = steps[: -(-rows // rows_per_step)]
    return [micro for step in first for share in step.micro_batches for micro in share if micro]
