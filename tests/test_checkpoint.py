"""Checkpoints load tensors and plain data only: a crafted state file in a run folder never runs, a truncated
one is one line."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from selfplay_toy import toy_config, toy_env, toy_policy

from langgraph_omar.cli import main
from langgraph_omar.rl.checkpoint import (
    LATEST,
    STATE_FILE,
    CheckpointError,
    load_state,
    rng_state,
    saved_config,
    set_rng_state,
)
from langgraph_omar.rl.selfplay import run_selfplay
from langgraph_omar.run_folder import RunFolder


class Payload:
    """Unpickling this creates `marker`: what an attacker's command would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _run_folder_with_state(root: Path, state: Any) -> Path:
    """A run folder whose latest checkpoint holds `state` as its trainer state (and an adapter file)."""
    checkpoint = RunFolder(root).checkpoints / "step-000001"
    (checkpoint / "adapter").mkdir(parents=True)
    (checkpoint / "adapter" / "adapter_model.safetensors").write_bytes(b"")
    torch.save(state, checkpoint / STATE_FILE)
    (RunFolder(root).checkpoints / LATEST).write_text("step-000001\n")
    return checkpoint


def test_a_pickle_payload_in_a_run_folder_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    checkpoint = _run_folder_with_state(run, {"step": 1, "config": Payload(marker)})
    with pytest.raises(CheckpointError, match="not a tensor or plain data") as info:
        saved_config(checkpoint)
    assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="refused to load it"):
        run_selfplay(toy_config(0, 2), run, toy_env(), policy=toy_policy(), progress=False)
    assert not marker.exists()


def test_a_truncated_state_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    state = {"step": 1, "config": toy_config(0, 2).to_dict(), "rng": rng_state()}
    checkpoint = _run_folder_with_state(run, state)
    data = (checkpoint / STATE_FILE).read_bytes()
    (checkpoint / STATE_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_state(checkpoint)
    toy_policy()
    assert main(["train", "selfplay_toy:toy_graph", "--out", str(run), "--model", "tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"omar train: error: {checkpoint / STATE_FILE} cannot be read") and "\n" not in err


def test_rng_states_round_trip_through_a_weights_only_load(tmp_path: Path) -> None:
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    torch.save(rng_state(), tmp_path / STATE_FILE)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    set_rng_state(load_state(tmp_path))
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_checkpoints_written_before_plain_rng_state_still_load(tmp_path: Path) -> None:
    # earlier versions saved numpy's RNG state as numpy gives it (a tuple holding a uint32 key array)
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    legacy = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    torch.save(legacy, tmp_path / STATE_FILE)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    set_rng_state(load_state(tmp_path))
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
