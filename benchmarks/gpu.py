"""The engine against `model.generate` at batch 128, and the update's tokens/s and MFU, on one GPU, in one go.

    bash benchmarks/gpu.sh                        # a Qwen2-1.5B-shaped model on cuda (under 10 minutes on an H100)
    python benchmarks/gpu.py --device cpu --tiny  # the same steps on a tiny shape: a smoke test

Nothing is downloaded: the model is a Qwen2-1.5B-shaped config (hidden 1536, 28 layers, 12 heads, 2 key-value
heads, vocabulary 151936) with random weights, in bf16 on a GPU; the tokenizer is the test suite's tiny one
(prompts are random token ids, and every row generates exactly `--new-tokens` tokens: end-of-sequence is
ignored on both sides, so both generate the same number of tokens).
1. Generation, generated tokens/s: `SharedPolicy` serving `--batch` concurrent requests (each with its own
   seed), against one `model.generate` call on the same left-padded batch (sampling, temperature 1).
2. The update: `PPOTrainer.update` (LoRA on the served model, gradient checkpointing) on `--update-batch`
   sequences of `--update-seq` tokens, half completion; tokens/s and MFU = model FLOPs / time / peak, with
   model FLOPs = 4 x parameters x tokens (forward 2NT; backward 2NT through the activations only, LoRA leaves
   the base weights without gradients; the recomputation of checkpointing and attention's own FLOPs are not
   counted). Peak: `--peak-tflops`, else the card's dense bf16 figure (H100/H200 989, A100 312), else none.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, Qwen2Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import make_batch  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

from langgraph_omar.rl.config import RunConfig  # noqa: E402
from langgraph_omar.rl.trainer import PPOTrainer  # noqa: E402
from langgraph_omar.serving.engine import SharedPolicy  # noqa: E402
from langgraph_omar.serving.sampling import SamplingParams  # noqa: E402
from langgraph_omar.testing import tiny_tokenizer  # noqa: E402

QWEN2_1_5B: dict[str, Any] = dict(
    vocab_size=151936,
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rope_theta=1_000_000.0,
    tie_word_embeddings=True,
)
TINY: dict[str, Any] = dict(
    QWEN2_1_5B, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4
)
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(tiny: bool, device: torch.device) -> Any:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = Qwen2Config(**(TINY if tiny else QWEN2_1_5B))
    torch.manual_seed(0)
    with device:  # random weights made on the device itself: no 1.5B-parameter copy from the CPU
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def prompts(batch: int, length: int, vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(1))


def engine_rate(engine: SharedPolicy, ids: torch.Tensor, new_tokens: int) -> float:
    """Generated tokens/s of the engine serving every row of ids (B, P) as its own concurrent request."""
    engine.eos_ids = set()  # every row generates new_tokens, as min_new_tokens makes generate do

    def run(rows: torch.Tensor, n: int) -> float:
        start = time.perf_counter()
        futures = [
            engine.submit(row.tolist(), SamplingParams(temperature=1.0, max_new_tokens=n, seed=i))
            for i, row in enumerate(rows)
        ]
        tokens = sum(len(f.result().completion_ids) for f in futures)
        synchronize(engine.device)
        return tokens / (time.perf_counter() - start)

    run(ids[:4], 4)  # warm-up
    return run(ids, new_tokens)


def generate_rate(model: Any, ids: torch.Tensor, new_tokens: int, pad_id: int) -> float:
    """Generated tokens/s of one `model.generate` call on the batch ids (B, P)."""
    device = next(model.parameters()).device
    ids = ids.to(device)
    options = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, pad_token_id=pad_id)
    with torch.inference_mode():
        model.generate(ids[:4], attention_mask=torch.ones_like(ids[:4]), max_new_tokens=4, **options)
        synchronize(device)
        start = time.perf_counter()
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            **options,
        )
        synchronize(device)
    return (out.shape[0] * (out.shape[1] - ids.shape[1])) / (time.perf_counter() - start)


def update_rate(engine: SharedPolicy, batch: int, seq: int, steps: int) -> tuple[float, int]:
    """Tokens/s of `PPOTrainer.update` on batch x seq tokens (best of `steps` after one warm-up), and the base
    model's parameter count."""
    parameters = sum(p.numel() for p in engine.model.parameters())
    config = RunConfig.from_dict(
        {
            "update": {
                "micro_batch_size": batch,
                "gradient_accumulation_steps": 1,
                "gradient_checkpointing": True,
                "skip_zero_advantage": False,
            }
        }
    )
    trainer = PPOTrainer(engine, config)
    data = make_batch(batch, seq, int(engine.model.config.vocab_size))
    trainer.update(data)
    best = float("inf")
    for _ in range(steps):
        synchronize(engine.device)
        start = time.perf_counter()
        trainer.update(data)
        synchronize(engine.device)
        best = min(best, time.perf_counter() - start)
    return batch * seq / best, parameters


def peak_flops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for card, tflops in PEAK_BF16_TFLOPS.items() if card in name), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a tiny model of the same family (smoke test)")
    parser.add_argument("--batch", type=int, default=128, help="concurrent requests / generate's batch")
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--update-batch", type=int, default=8)
    parser.add_argument("--update-seq", type=int, default=1024)
    parser.add_argument("--update-steps", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak for MFU")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here: run with --device cpu --tiny for the smoke test")
    started = time.perf_counter()
    model = build(args.tiny, device)
    engine = SharedPolicy("gpu-bench", model, tiny_tokenizer(), max_batch_size=args.batch, prefix_cache_mb=0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    parameters = sum(p.numel() for p in model.parameters())
    print(
        f"device {name}, dtype {next(model.parameters()).dtype}, {parameters / 1e9:.2f}B parameters (random)"
    )
    ids = prompts(args.batch, args.prompt_tokens, int(model.config.vocab_size))
    ours = engine_rate(engine, ids, args.new_tokens)
    theirs = generate_rate(model, ids, args.new_tokens, int(engine.tokenizer.pad_token_id))
    print(f"batch {args.batch}, prompts {args.prompt_tokens} tokens, {args.new_tokens} new tokens each:")
    print(f"  engine (SharedPolicy):  {ours:.1f} generated tokens/s")
    print(f"  model.generate:         {theirs:.1f} generated tokens/s")
    print(f"  engine / generate:      {ours / theirs:.2f}")
    rate, n = update_rate(engine, args.update_batch, args.update_seq, args.update_steps)
    peak = peak_flops(device, args.peak_tflops)
    mfu = f"{4 * n * rate / peak:.1%}" if peak else "n/a (no known peak: pass --peak-tflops)"
    print(f"update ({args.update_batch} x {args.update_seq} tokens, LoRA): {rate:.1f} tokens/s, MFU {mfu}")
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
