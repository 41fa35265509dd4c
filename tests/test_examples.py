from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from adapter_helpers import save_random_adapter

from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.testing import tiny_model, tiny_tokenizer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MODEL = "tiny-examples"


def _example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the examples run on a tiny random model with room for SOTOPIA's and Werewolf's long prompts
    SharedPolicy.register(SharedPolicy(MODEL, tiny_model(0, context=4096), tiny_tokenizer(), max_wait_ms=5))
    monkeypatch.chdir(tmp_path)


def test_negotiation_example(capsys: pytest.CaptureFixture[str]) -> None:
    _example("negotiation").main(MODEL, episodes=2, max_tokens=3)
    out = capsys.readouterr().out
    assert "[buyer]" in out and "agreements" in out
    assert Path("runs/examples/negotiation.jsonl").exists()


def test_sotopia_example(capsys: pytest.CaptureFixture[str]) -> None:
    _example("sotopia").main(MODEL, max_tokens=3)
    out = capsys.readouterr().out
    assert "Turn #0" in out and "judge failures" in out


def test_werewolf_example(capsys: pytest.CaptureFixture[str]) -> None:
    _example("werewolf").main(MODEL, max_tokens=3, max_rounds=1)
    assert "winner:" in capsys.readouterr().out


def test_swap_adapter_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    adapter = save_random_adapter(tiny_model(0), tmp_path / "adapter")
    _example("swap_adapter").main(str(adapter), MODEL, max_tokens=2, episodes=1)
    out = capsys.readouterr().out
    assert "('policy', 1)" in out and "after the swap: {('policy', 2)}" in out
    assert "tested - opponent" in out
