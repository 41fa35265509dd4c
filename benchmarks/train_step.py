"""One PPO update of the trainer, chunked log-probabilities vs a naive full log-softmax.

    python benchmarks/train_step.py [--batch 8] [--seq 512] [--steps 1]

The model has the default model's shapes (SmolLM2-135M: vocab 49152, hidden 576, 30 layers, tied
embeddings), randomly initialised: no download, and the shapes are what costs memory. The batch is 8 random
sequences of 512 tokens whose second half is the completion. Both variants run `PPOTrainer.update` (LoRA
r=8 on the attention projections, gradient checkpointing so that the transformer body's activations do not
drown the difference being measured); the naive one only swaps `_token_logprobs` for
`log_softmax(hidden @ W.T).gather(...)`, which holds (batch, sequence, vocabulary) float tensors.

Peak memory of the update step:
- CUDA: `torch.cuda.max_memory_allocated()` during the step minus the allocation before it.
- CPU: each variant runs in its own process; a thread samples the resident set size (/proc/self/statm)
  every millisecond during the step, and `getrusage(RUSAGE_SELF).ru_maxrss` (the kernel's exact peak) is
  read after it; the step's peak is the larger of the two minus the RSS just before the step. tracemalloc
  cannot see torch's allocations, which is why it is not used. One unmeasured update comes first: the first
  update of a process also pays one-time costs (oneDNN caches, the allocator's heap growing) that are no
  part of an update's working set (measured here: without it, chunked 3295 MiB vs naive 6084 MiB).
Last line: `memory_ratio: X.XX` (naive / chunked). Target >= 3 with tokens/s not lower than naive.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from langgraph_omar.rl.batch import TrainingBatch, TurnSample
from langgraph_omar.rl.config import RunConfig, UpdateSettings
from langgraph_omar.rl.trainer import PPOTrainer
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.testing import tiny_tokenizer

# SmolLM2-135M-Instruct's architecture.
DEFAULT_MODEL_SHAPES: dict[str, Any] = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=8192,
    tie_word_embeddings=True,
    rms_norm_eps=1e-5,
)


class NaiveTrainer(PPOTrainer):
    """The same update with the textbook log-probabilities: a full (B, T, V) log-softmax."""

    def _token_logprobs(
        self, hidden: torch.Tensor, batch: TrainingBatch
    ) -> tuple[torch.Tensor, torch.Tensor]:
        weight, _ = self._lm_head()
        logits = hidden[:, :-1] @ weight.T
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        targets = batch.input_ids[:, 1:].to(hidden.device)
        chosen = log_probs.gather(-1, targets[..., None]).squeeze(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1).detach()
        return chosen, entropy


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssPeak:
    """Samples the resident set size every millisecond in a thread while the block runs."""

    def __enter__(self) -> RssPeak:
        self.peak, self._stop = rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def make_batch(batch: int, seq: int, vocab: int, seed: int = 0) -> TrainingBatch:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    completion = torch.zeros(batch, seq, dtype=torch.bool)
    completion[:, seq // 2 :] = True
    advantages = torch.randn(batch, 1, generator=g).expand(batch, seq) * completion
    samples = [TurnSample(i, 0, "r", "g", "k", [], [], [], 1.0, None) for i in range(batch)]
    return TrainingBatch(
        input_ids=ids,
        attention_mask=torch.ones(batch, seq, dtype=torch.long),
        completion_mask=completion,
        old_logprobs=torch.full((batch, seq), -10.8) * completion,  # ~ log(1 / 49152): a fresh model's
        advantages=advantages.contiguous(),
        weights=completion.float(),
        temperatures=torch.ones(batch),
        samples=samples,
    )


def measure(variant: str, batch_size: int, seq: int, steps: int, warmup: int, chunk: int) -> dict[str, Any]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model: Any = LlamaForCausalLM(LlamaConfig(**DEFAULT_MODEL_SHAPES))
    model = model.to(device=device, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32).eval()
    policy = SharedPolicy(f"bench-{variant}", model, tiny_tokenizer())
    config = RunConfig.from_dict(
        {
            "update": {
                "micro_batch_size": batch_size,
                "gradient_accumulation_steps": 1,
                "gradient_checkpointing": True,
                "skip_zero_advantage": False,
                "chunk_size": chunk,
            },
        }
    )
    trainer = (NaiveTrainer if variant == "naive" else PPOTrainer)(policy, config)
    batch = make_batch(batch_size, seq, DEFAULT_MODEL_SHAPES["vocab_size"])
    for _ in range(warmup):
        trainer.update(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = rss_bytes()
        rusage_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    with RssPeak() as sampled:
        for _ in range(steps):
            trainer.update(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - before
    else:
        rusage_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        kernel_peak = rusage_after if rusage_after > rusage_before else 0
        peak = max(sampled.peak, kernel_peak) - before
    tokens = batch_size * seq * steps
    return {"variant": variant, "device": str(device), "tokens_per_s": tokens / seconds, "peak_bytes": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument(
        "--steps", type=int, default=None, help="measured updates (default: 5 on GPU, 1 on CPU)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="unmeasured updates first (default: 2 on GPU, 1 on CPU)"
    )
    parser.add_argument("--chunk-size", type=int, default=None, help="positions per chunk (trainer default)")
    parser.add_argument("--variant", choices=("chunked", "naive"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    warmup = args.warmup if args.warmup is not None else (2 if cuda else 1)
    steps = args.steps if args.steps is not None else (5 if cuda else 1)
    chunk = args.chunk_size or UpdateSettings().chunk_size
    if args.variant:  # a child process measuring one variant
        print(json.dumps(measure(args.variant, args.batch, args.seq, steps, warmup, chunk)))
        return
    results = {}
    for variant in ("chunked", "naive"):
        command = [
            sys.executable,
            __file__,
            "--variant",
            variant,
            "--batch",
            str(args.batch),
            "--seq",
            str(args.seq),
            "--steps",
            str(steps),
            "--warmup",
            str(warmup),
            "--chunk-size",
            str(chunk),
        ]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
        r = results[variant]
        print(
            f"{variant:8s} {r['device']}: {r['tokens_per_s']:8.1f} tokens/s, peak {r['peak_bytes'] / 2**20:8.1f} MiB"
        )
    speed = results["chunked"]["tokens_per_s"] / results["naive"]["tokens_per_s"]
    print(
        f"batch {args.batch} x {args.seq} tokens, vocab {DEFAULT_MODEL_SHAPES['vocab_size']}, chunk {chunk}; speed ratio {speed:.2f}"
    )
    print(f"memory_ratio: {results['naive']['peak_bytes'] / max(results['chunked']['peak_bytes'], 1):.2f}")


if __name__ == "__main__":
    main()
