"""The run folder: one object knows its layout and reads its metrics; a torn last line (a killed run's) is
skipped with a warning, a bad line elsewhere is a one-line error."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from langgraph_omar.errors import OmarError
from langgraph_omar.run_folder import RunFolder, TornLineWarning

PACKAGE = Path(__file__).resolve().parents[1] / "langgraph_omar"
RUN_FILES = {"config.yaml", "metrics.jsonl", "trajectories.jsonl", "sources.json", "checkpoints", "logs"}


def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    folder.metrics_file.write_text('{"iteration": 0, "reward_mean": 0.1}\n\n{"iteration": 1,')
    with pytest.warns(TornLineWarning, match=r"metrics.jsonl:3: a torn last line"):
        assert folder.read_metrics() == [{"iteration": 0, "reward_mean": 0.1}]


def test_a_bad_line_before_the_last_names_it(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    folder.metrics_file.write_text('{"iteration": 0,\n{"iteration": 1}\n')
    with pytest.raises(OmarError, match=r"metrics.jsonl:1: not valid JSON"):
        folder.read_metrics()
    folder.metrics_file.write_text('{"reward_mean": 0.1}\n')
    with pytest.raises(
        OmarError, match=r"metrics.jsonl:1: expected a JSON object with a numeric 'iteration'"
    ):
        folder.read_metrics()
    folder.metrics_file.write_text(
        '{"iteration": 0, "reward_mean": 0.1}\n\n{"iteration": 1, "reward_mean": 0.2}\n'
    )
    assert [row["iteration"] for row in folder.read_metrics()] == [0, 1]
    assert RunFolder(tmp_path / "none").read_metrics() == []


def test_a_resume_keeps_the_records_before_its_checkpoint_and_drops_a_torn_line(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    for i in range(3):
        folder.append_metrics({"iteration": i, "loss": 1.0})
    with folder.metrics_file.open("a") as f:
        f.write('{"iteration": 3, "lo')  # a kill in the middle of the write
    folder.keep_metrics_before(2)
    lines = folder.metrics_file.read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [0, 1]


def test_publish_adapter_replaces_the_adapter_and_leaves_no_temporary(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)

    def save(text: str):
        def write(tmp: Path) -> Path:
            (tmp / "adapter_model.safetensors").write_text(text)
            return tmp

        return write

    folder.publish_adapter(save("one"))
    folder.publish_adapter(save("two"))
    assert (folder.adapter / "adapter_model.safetensors").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def _strings_and_joins(path: Path) -> tuple[set[str], set[str]]:
    """The module's string constants, and the strings it joins onto a path (`x / "adapter"`)."""
    tree = ast.parse(path.read_text())
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    joins = {
        n.right.value
        for n in ast.walk(tree)
        if isinstance(n, ast.BinOp)
        and isinstance(n.op, ast.Div)
        and isinstance(n.right, ast.Constant)
        and isinstance(n.right.value, str)
    }
    return strings, joins


def test_no_module_but_the_run_folder_names_the_run_folders_files() -> None:
    for path in PACKAGE.rglob("*.py"):
        if path.name == "run_folder.py":
            continue
        strings, joins = _strings_and_joins(path)
        named = strings & RUN_FILES
        # a checkpoint's step folder holds its own adapter/ (rl/checkpoint.py's layout, not the run's)
        if path.name != "checkpoint.py":
            named |= joins & {"adapter"}
        assert not named, f"{path.relative_to(PACKAGE)} names the run folder's {sorted(named)}"


def test_one_metrics_reader() -> None:
    """Outside the run folder nothing reads its metrics file (`RunFolder.read_metrics` is the reader)."""
    readers = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "run_folder.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in {"read_text", "read_bytes", "open"}
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "metrics_file"
            ):
                readers.append(str(path.relative_to(PACKAGE)))
    assert not readers, readers
