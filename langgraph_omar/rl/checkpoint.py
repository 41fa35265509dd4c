"""Checkpoints of a training run, written atomically, for exact resume.

    RUN/checkpoints/step-000004/
        adapter/                 peft `save_pretrained` of the trained adapter (adapter_model.safetensors)
        value_head.safetensors   the critic's Linear(H, 1) (critic mode only)
        trainer_state.pt         optimizer, scheduler, RNG states (python, numpy, torch, cuda), step,
                                 EMA baseline, trainer counters, config: tensors and plain data only
    RUN/checkpoints/latest       the name of the newest complete checkpoint

Each checkpoint is built in a temporary folder beside its final name, flushed to disk, then renamed, and
only then does `latest` move (itself written to a temporary file and `os.replace`d): a process killed at any
instant leaves the previous checkpoint intact and `latest` pointing at a complete one.

A run folder may come from anyone, so loading executes nothing: weights are safetensors and the state file
is read with `torch.load(weights_only=True)`, which builds tensors and plain Python data and refuses every
other object a pickle names (a crafted file is a CheckpointError, its payload never runs).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from langgraph_omar.atomic import write_atomic
from langgraph_omar.errors import OmarError, first_line
from langgraph_omar.rl.advantages import EmaBaseline
from langgraph_omar.rl.trainer import PPOTrainer
from langgraph_omar.run_folder import RunFolder
from langgraph_omar.serving.adapters import CONFIG_FILE, WEIGHTS_FILE, check_adapter_files

LATEST = "latest"
STATE_FILE = "trainer_state.pt"


class CheckpointError(OmarError):
    """A checkpoint that is missing, incomplete or does not fit the trainer."""


# What checkpoints written before the state file held plain data only need besides: numpy's RNG key array
# (a uint32 ndarray). These rebuild an array of numbers and nothing else.
_LEGACY_NUMPY_GLOBALS: list[Any] = [
    np.zeros(1).__reduce__()[0],
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),
]


def rng_state() -> dict[str, Any]:
    """The RNG states as tensors and plain data (numpy's key array as a list of ints)."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [name, np.asarray(keys).tolist(), position, has_gauss, cached_gaussian],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]  # a list (plain data) or, in older checkpoints, the tuple numpy gives
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    for directory in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_checkpoint(
    run_dir: str | Path, step: int, trainer: PPOTrainer, ema: EmaBaseline, keep: int = 2
) -> Path:
    """Write checkpoint `step` of `trainer` under the run's checkpoints folder, move `latest`, prune old ones."""
    root = RunFolder(run_dir).checkpoints
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=root))
    try:
        adapter_dir = tmp / "adapter"
        peft_model = trainer.module.peft_model
        peft_model.save_pretrained(str(adapter_dir), selected_adapters=[trainer.adapter_name])
        nested = adapter_dir / trainer.adapter_name  # peft nests adapters not named "default"
        if nested.is_dir():
            for item in nested.iterdir():
                item.rename(adapter_dir / item.name)
            nested.rmdir()
        if trainer.value_head is not None:
            head = {k: v.detach().cpu().contiguous() for k, v in trainer.value_head.state_dict().items()}
            save_file(head, str(tmp / "value_head.safetensors"))
        torch.save(
            {
                "step": step,
                "optimizer": trainer.optimizer.state_dict(),
                "scheduler": trainer.scheduler.state_dict(),
                "rng": rng_state(),
                "ema": ema.state_dict(),
                "updates_done": trainer.updates_done,
                "optimizer_steps": trainer.optimizer_steps,
                "config": trainer.config.to_dict(),
            },
            tmp / STATE_FILE,
        )
        _fsync_tree(tmp)
        if final.exists():  # a re-run of the same step after a crash: replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_atomic(root / LATEST, final.name + "\n")
    prune_checkpoints(run_dir, keep)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of the run, or None."""
    pointer = RunFolder(run_dir).checkpoints / LATEST
    if not pointer.exists():
        return None
    path = pointer.parent / pointer.read_text().strip()
    if not (path / STATE_FILE).exists():
        raise CheckpointError(f"{pointer} names {path.name}, which has no {STATE_FILE}")
    return path


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the `keep` newest checkpoints (and leftovers of interrupted writes)."""
    root = RunFolder(run_dir).checkpoints
    for leftover in root.glob(".step-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    steps = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in steps[: max(0, len(steps) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: str | Path, trainer: PPOTrainer, ema: EmaBaseline) -> int:
    """Restore adapter weights, value head, optimizer, scheduler, RNG and EMA state; returns the step."""
    path = Path(path)
    weights = path / "adapter" / "adapter_model.safetensors"
    if not weights.exists() or not (path / STATE_FILE).exists():
        raise CheckpointError(f"checkpoint {path} is incomplete: expected adapter/ and {STATE_FILE}")
    state = load_state(path)
    _load_adapter_weights(trainer, weights, f"checkpoint {path}")
    if trainer.value_head is not None:
        head_file = path / "value_head.safetensors"
        if not head_file.exists():
            raise CheckpointError(f"checkpoint {path} has no value_head.safetensors (critic mode needs one)")
        trainer.value_head.load_state_dict(load_file(str(head_file)))
    try:
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.scheduler.load_state_dict(state["scheduler"])
        trainer.updates_done = int(state["updates_done"])
        trainer.optimizer_steps = int(state["optimizer_steps"])
        ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"])
        step = int(state["step"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{path / STATE_FILE} does not fit the trainer: {first_line(exc, 200)}"
        ) from None
    trainer.policy.bump_adapter_version(trainer.adapter_name)
    return step


def load_state(path: str | Path) -> dict[str, Any]:
    """The trainer state of checkpoint `path`: tensors and plain data only; any other object, or a file
    that is not a complete state file, is a CheckpointError (nothing in the file is executed)."""
    file = Path(path) / STATE_FILE
    try:
        with torch.serialization.safe_globals(_LEGACY_NUMPY_GLOBALS):
            state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = first_line(exc, 200)
        found = re.search(r"(?:got|GLOBAL) (.+?)(?: was not an allowed global|$)", str(exc))
        if found:
            detail = found.group(1)
        raise CheckpointError(
            f"{file} holds an object that is not a tensor or plain data ({detail}); refused to load it"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{file} cannot be read (truncated or corrupt?): {first_line(exc, 200)}"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{file}: expected a dict of trainer state, got {type(state).__name__}")
    return state


def _load_adapter_weights(trainer: PPOTrainer, weights: Path, what: str) -> None:
    try:
        result = set_peft_model_state_dict(
            trainer.module.peft_model, load_file(str(weights)), adapter_name=trainer.adapter_name
        )
    except RuntimeError as e:  # a shape mismatch: another rank or model
        raise CheckpointError(f"{what}: adapter weights do not fit the model: {first_line(e)}") from e
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise CheckpointError(f"{what}: adapter weights do not fit the model: {unexpected[:3]}")


def load_adapter_weights(trainer: PPOTrainer, directory: str | Path) -> None:
    """Start the trained adapter from a saved one (`save_pretrained` layout: adapter_config.json and
    adapter_model.safetensors), e.g. a behaviour-cloning run's RUN/adapter; its LoRA rank, alpha and target
    modules must be the run's."""
    directory = Path(directory).expanduser()
    try:
        check_adapter_files(directory)
    except OmarError as e:
        raise CheckpointError(f"init adapter {directory}: {e}") from None
    saved = json.loads((directory / CONFIG_FILE).read_text())
    lora = trainer.config.lora
    targets = lora.target_modules if lora.target_modules != ["all-linear"] else "all-linear"
    wanted = {"r": lora.rank, "lora_alpha": lora.alpha}
    differ = [f"{k} {saved.get(k)!r} (the run's {v!r})" for k, v in wanted.items() if saved.get(k) != v]
    if isinstance(targets, list) and sorted(saved.get("target_modules") or []) != sorted(targets):
        differ.append(f"target_modules {saved.get('target_modules')!r} (the run's {targets!r})")
    if differ:
        raise CheckpointError(f"init adapter {directory}: LoRA settings differ: {', '.join(differ)}")
    _load_adapter_weights(trainer, directory / WEIGHTS_FILE, f"init adapter {directory}")
    trainer.policy.bump_adapter_version(trainer.adapter_name)


def resume_or_start(checkpoint: Path | None, trainer: PPOTrainer, ema: EmaBaseline) -> int:
    """The iteration a run starts at: the checkpoint's (restored), else 0, from `update.init_adapter` when
    the config names one."""
    if checkpoint is not None:
        return load_checkpoint(checkpoint, trainer, ema)
    if trainer.config.update.init_adapter:
        load_adapter_weights(trainer, trainer.config.update.init_adapter)
    return 0


def saved_config(path: str | Path) -> dict[str, Any]:
    """The run config stored in a checkpoint."""
    config = load_state(path).get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{Path(path) / STATE_FILE} holds no run config")
    return dict(config)
