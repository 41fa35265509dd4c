"""Several processes: two over gloo on this CPU (torchrun), the split of each optimizer step, and the
accelerate launch files of training/."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from langgraph_omar.rl.micro_batches import plan_steps
from langgraph_omar.trajectory import read_episodes

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(run: Path, iterations: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", str(_free_port()), str(TESTS / "selfplay_distributed.py"), str(run)]
    return subprocess.Popen(
        [*command, str(iterations)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (Linux /proc): torchrun starts each worker in a session of its own."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *(p for child in children for p in _process_tree(int(child)))]


@pytest.mark.subprocess
def test_two_processes_share_the_groups_average_the_gradients_and_resume_after_kill_9(tmp_path):
    """torchrun, 2 CPU processes, 3 iterations of 4 groups: killed with SIGKILL once checkpoint 1 exists,
    then the same command again. Every episode of both processes is in trajectories.jsonl, each metrics line
    counts both processes' episodes, and both processes end with the same adapter, the exported one."""
    run = tmp_path / "run"
    victim = _torchrun(run, 3)
    latest = run / "checkpoints" / "latest"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and victim.poll() is None and not latest.exists():
        time.sleep(0.01)
    assert victim.poll() is None, victim.communicate()[0].decode()[-3000:]
    for pid in _process_tree(victim.pid):  # the launcher and both workers, as a lost machine would
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    victim.wait()
    assert not (run / "adapter").exists()  # it really died mid-run
    resumed = _torchrun(run, 3)
    output = resumed.communicate(timeout=240)[0].decode()
    assert resumed.returncode == 0, output[-3000:]
    assert output.count("iteration 3/3 | reward speaker") == 1  # the console line: main process only

    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in lines] == [0, 1, 2]
    assert all(m["num_processes"] == 2 and m["episodes"] == 8 for m in lines)
    episodes = read_episodes(run / "trajectories.jsonl")
    groups = {e.metadata["group_id"] for e in episodes}
    assert len(episodes) == 24 and len(groups) == 12  # groups 0, 2 played by process 0; 1, 3 by process 1
    ranks = [load_file(str(run / f"adapter-rank-{k}.safetensors")) for k in (0, 1)]
    exported = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert ranks[0].keys() == ranks[1].keys() == exported.keys() and exported
    assert all(
        torch.equal(ranks[0][k], ranks[1][k]) and torch.equal(ranks[0][k], exported[k]) for k in exported
    )


@pytest.mark.parametrize("share_prefixes", [False, True])
def test_each_optimizer_step_is_dealt_out_to_the_processes(share_prefixes):
    """Each optimizer step takes micro_batch_size * accumulation rows per process and deals them out, so the
    processes' shares partition the step's rows (every process plans the same steps from the same seed)."""
    lengths = [5, 1, 4, 2, 3, 9, 7, 8, 6, 10]
    prompts = [[r % 3] * 40 + [r] for r in range(10)]
    settings = dict(micro_batch_size=2, accumulation=2, processes=2, epochs=1, seed=0)
    steps = plan_steps(range(10), prompts, lengths, share_prefixes=share_prefixes, **settings)  # type: ignore[arg-type]
    assert [len(step.rows) for step in steps] == [8, 2]
    for step in steps:
        mine, theirs = step.micro_batches
        assert all(len(micro) <= 2 for micro in mine + theirs) and len(mine) == len(theirs) == 2
        assert sorted(sum(mine + theirs, [])) == sorted(step.rows)
    assert steps[1].micro_batches[0] == [steps[1].rows[:1], []]  # the last step: one row each
    assert sorted(r for step in steps for r in step.rows) == list(range(10))


@pytest.mark.parametrize(
    ("name", "launcher", "expected"),
    [
        ("ddp", "multi_gpu", {}),
        ("fsdp", "use_fsdp", {"fsdp_sharding_strategy": "SHARD_GRAD_OP", "fsdp_use_orig_params": True}),
        ("deepspeed", "use_deepspeed", {"zero_stage": 2}),
    ],
)
def test_the_accelerate_launch_files_parse_as_accelerate_launch_reads_them(name, launcher, expected):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    config = ROOT / "training" / f"accelerate_{name}.yaml"
    args = launch_command_parser().parse_args(
        ["--config_file", str(config), "-m", "langgraph_omar.cli", "train", "negotiation", "--out", "x"]
    )
    _validate_launch_command(args)  # reads the file, rejecting unknown keys and values
    assert getattr(args, launcher) and args.num_processes == 2 and args.mixed_precision == "bf16"
    for key, value in expected.items():
        assert getattr(args, key) == value, key
