"""`torchrun --nproc_per_node 2 tests/selfplay_distributed.py RUN_DIR ITERATIONS`: the toy self-play run
(tests/selfplay_toy.py) on every process, over gloo on the CPU; each process then saves its own adapter's
LoRA weights to RUN_DIR/adapter-rank-K.safetensors, for the test to compare."""

from __future__ import annotations

import sys

from accelerate import PartialState
from peft import get_peft_model_state_dict
from safetensors.torch import save_file
from selfplay_toy import toy_run

from langgraph_omar.rl.selfplay import ADAPTER

if __name__ == "__main__":
    run_dir, iterations = sys.argv[1], int(sys.argv[2])
    policy = toy_run(
        run_dir,
        iterations,
        selfplay={"episodes_per_iteration": 8, "group_size": 2, "max_concurrency": 4},
        update={"epochs": 1, "micro_batch_size": 2, "gradient_accumulation_steps": 2},
    )
    weights = get_peft_model_state_dict(policy.model, adapter_name=ADAPTER)
    rank = PartialState().process_index
    save_file({k: v.contiguous() for k, v in weights.items()}, f"{run_dir}/adapter-rank-{rank}.safetensors")
