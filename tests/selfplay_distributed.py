"""`torchrun --nproc_per_node 2 tests/selfplay_distributed.py RUN_DIR ITERATIONS`: `omar train` of the toy
graph (tests/selfplay_toy.py) on the tiny model, on every process, over gloo on the CPU, as
`torchrun -m langgraph_omar.cli train` runs it; each process then saves its own adapter's LoRA weights to
RUN_DIR/adapter-rank-K.safetensors, for the test to compare."""

from __future__ import annotations

import sys
from pathlib import Path

from accelerate import PartialState
from peft import get_peft_model_state_dict
from safetensors.torch import save_file
from selfplay_toy import toy_config, toy_policy

from langgraph_omar.cli import main
from langgraph_omar.rl.selfplay import ADAPTER

if __name__ == "__main__":
    run_dir, iterations = Path(sys.argv[1]), int(sys.argv[2])
    policy = toy_policy(seed=0)  # the engine `omar train` finds under the name "tiny"
    config = toy_config(
        0,
        iterations,
        selfplay={"episodes_per_iteration": 8, "group_size": 2, "max_concurrency": 4},
        update={"epochs": 1, "micro_batch_size": 2, "gradient_accumulation_steps": 2},
    )
    rank = PartialState(cpu=True).process_index
    config_file = run_dir.parent / f"config-rank-{rank}.yaml"
    config_file.write_text(config.to_yaml())
    code = main(["train", "selfplay_toy:toy_graph", "--config", str(config_file), "--out", str(run_dir)])
    weights = get_peft_model_state_dict(policy.model, adapter_name=ADAPTER)
    save_file(
        {k: v.contiguous() for k, v in weights.items()}, str(run_dir / f"adapter-rank-{rank}.safetensors")
    )
    sys.exit(code)
