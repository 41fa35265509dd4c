"""Bad input ends in one line on stderr (`omar CMD: error: ...`), never a traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from adapter_helpers import save_random_adapter, save_tiny_base

from langgraph_omar.cli import main
from langgraph_omar.testing import tiny_model
from langgraph_omar.trajectory import Episode, TrajectoryFileError, read_episodes, write_episodes


def one_line_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"omar {command}: error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("raise RuntimeError('no GPU here')\n", "raised RuntimeError: no GPU here"),
        ("def graph(:\n", "raised SyntaxError: invalid syntax"),
    ],
    ids=["RuntimeError", "SyntaxError"],
)
def test_a_graph_module_that_raises_at_import(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    source: str,
    problem: str,
) -> None:
    module = f"broken_{problem.split()[1].rstrip(':').lower()}"
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, module, raising=False)
    assert main(["rollout", f"{module}:graph", "--out", str(tmp_path / "e.jsonl")]) == 2
    assert problem in one_line_error(capsys, "rollout")


def test_a_graph_factory_that_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = (
        "def sample_input(seed):\n    return {}\n\ndef graph(model):\n    raise KeyError('missing_tool')\n"
    )
    (tmp_path / "raising_factory.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    assert main(["rollout", "raising_factory:graph", "--out", str(tmp_path / "e.jsonl")]) == 2
    # the user's own code raised: one line from omar, then the user's exception in full (their frames only)
    first, *rest = capsys.readouterr().err.strip().splitlines()
    assert first == "omar rollout: error: raising_factory:graph: the factory raised KeyError (below)"
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "KeyError: 'missing_tool'"
    assert "raising_factory.py" in rest[1]


def test_export_out_naming_an_existing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = save_tiny_base(tmp_path / "base")
    adapter = save_random_adapter(tiny_model(), tmp_path / "adapter", base_name=str(base))
    out = tmp_path / "model.txt"
    out.write_text("keep me")
    capsys.readouterr()
    for extra in ([], ["--overwrite"]):
        assert main(["export", str(adapter), "--merge", "--out", str(out), *extra]) == 2
        assert f"{out} is a file" in one_line_error(capsys, "export")
    assert out.read_text() == "keep me"


def test_a_jsonl_line_nested_too_deeply(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    write_episodes(path, [Episode("ok")])
    with path.open("a") as f:  # the id after the deep value: an append must parse the line to find it
        f.write(
            '{"metadata": ' + "[" * 100_000 + "]" * 100_000 + ', "schema_version": 1, "episode_id": "d"}\n'
        )
    with pytest.raises(TrajectoryFileError, match="line 2: not an episode: nested too deeply"):
        read_episodes(path)
    with pytest.raises(TrajectoryFileError, match="line 2: not an episode: nested too deeply"):
        write_episodes(path, [Episode("next")])  # appending reads the ids of every line


def test_a_config_that_is_not_utf8_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "run.yaml"
    config.write_bytes("selfplay:\n  iterations: 2  # \xe9t\xe9\n".encode("latin-1"))
    assert main(["train", "negotiation", "--out", str(tmp_path / "run"), "--config", str(config)]) == 2
    err = one_line_error(capsys, "train")
    assert f"{config}: not UTF-8 text" in err
