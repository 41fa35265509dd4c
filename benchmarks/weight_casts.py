"""bf16 forwards on float32 weights: autocast's cast at every forward vs copies cast once, side by side.

    OMP_NUM_THREADS=1 python benchmarks/weight_casts.py [--repeats 5]

The configuration of a CPU with bf16 dot products but no AMX tiles (Zen 4): the served weights stay float32
(decode is faster in float32 there) while the prefill and the update run under bf16 autocast, which casts
every weight at every forward because the frozen base weights do not require grad (autocast caches only
those that do). `precision.frozen_weight_casts` makes those casts once. SmolLM2-135M's shapes, random weights
(no download), LoRA r 8 on q/k/v/o as the recipes train it. Timed, alternating the two variants:
- a prefill: one row of 100 new tokens through the causal LM under `autocast_forward` (the engine's path);
- an update micro-batch: 4 rows x 280 tokens sharing a 155-token prefix, forward (`PolicyWithValueHead`) and
  backward of a loss on the last 25 tokens, as the trainer runs it.
Prints the medians of each and last `speedup: X.XX` (the micro-batch without the copies over with them).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from peft import LoraConfig, get_peft_model
from torch.func import functional_call
from train_step import DEFAULT_MODEL_SHAPES  # this directory: run as a script
from transformers import LlamaConfig, LlamaForCausalLM

from langgraph_omar.rl.trainer import PolicyWithValueHead
from langgraph_omar.serving.precision import autocast_forward, frozen_weight_casts


def seconds(run: Callable[[], object], repeats: int) -> list[float]:
    run()  # warm-up: oneDNN primitives for these shapes
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**DEFAULT_MODEL_SHAPES)).eval()
    model.requires_grad_(False)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    peft_model = get_peft_model(model, lora)
    prompt = torch.randint(0, 49152, (1, 100))

    def prefill(copies: bool) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode(), autocast_forward(peft_model, torch.bfloat16) as weights:
                inputs = {"input_ids": prompt, "logits_to_keep": 1}
                return functional_call(peft_model, weights, (), inputs) if copies else peft_model(**inputs)

        return run

    rows = torch.randint(0, 49152, (4, 280))
    rows[:, :155] = rows[0, :155]
    mask = torch.ones_like(rows)

    def micro_batch(module: PolicyWithValueHead) -> Callable[[], object]:
        def run() -> object:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                states, _ = module(rows, mask, shared_prefix=155)
            loss = states[:, -25:].float().pow(2).mean()
            loss.backward()
            return loss

        return run

    modules = {
        copies: PolicyWithValueHead(peft_model, None, torch.bfloat16 if copies else None)
        for copies in (False, True)
    }
    # float32 weights: there is something to cast
    assert frozen_weight_casts(modules[True].body(), torch.bfloat16)
    results: dict[str, dict[bool, list[float]]] = {"prefill": {}, "micro-batch": {}}
    for _ in range(2):  # alternate, twice: the machine's noise falls on both
        for copies in (False, True):
            results["prefill"].setdefault(copies, []).extend(seconds(prefill(copies), args.repeats))
            results["micro-batch"].setdefault(copies, []).extend(
                seconds(micro_batch(modules[copies]), args.repeats)
            )
    print(f"SmolLM2-135M shapes, float32 weights, bf16 autocast, torch threads {torch.get_num_threads()}")
    for name, by in results.items():
        cast_each_time, cast_once = (statistics.median(by[c]) * 1000 for c in (False, True))
        print(f"{name:>11}: cast every forward {cast_each_time:.0f} ms, cast once {cast_once:.0f} ms")
    each, once = (statistics.median(results["micro-batch"][c]) for c in (False, True))
    print(f"speedup: {each / once:.2f}")


if __name__ == "__main__":
    main()
