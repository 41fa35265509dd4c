"""No code from a model folder runs: `trust_remote_code=False` on every transformers load, and a folder that
needs custom code (`auto_map`, an unknown `model_type`) is refused with one line before transformers sees it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from adapter_helpers import save_random_adapter, save_tiny_base

from langgraph_omar.cli import main
from langgraph_omar.errors import OmarError
from langgraph_omar.serving.models import load_model
from langgraph_omar.testing import tiny_model

CUSTOM_CODE = "from pathlib import Path\nPath({marker!r}).write_text('ran')\n"


def custom_code_model(root: Path, marker: Path, *, auto_map: bool = True) -> Path:
    """A model folder whose config asks for its own modeling code, which would create `marker` if run."""
    folder = save_tiny_base(root / "custom")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "evil_llama"
    if auto_map:
        config["auto_map"] = {
            "AutoConfig": "configuration_evil.EvilConfig",
            "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM",
        }
    (folder / "config.json").write_text(json.dumps(config))
    for module in ("configuration_evil.py", "modeling_evil.py"):
        (folder / module).write_text(CUSTOM_CODE.format(marker=str(marker)))
    return folder


@pytest.mark.parametrize("auto_map", [True, False], ids=["auto_map", "unknown_model_type"])
def test_a_model_folder_needing_custom_code_is_refused(tmp_path: Path, auto_map: bool) -> None:
    marker = tmp_path / "ran"
    folder = custom_code_model(tmp_path, marker, auto_map=auto_map)
    with pytest.raises(
        OmarError, match="auto_map" if auto_map else "model_type 'evil_llama' is unknown"
    ) as info:
        load_model(str(folder), torch.device("cpu"), torch.float32)
    assert "\n" not in str(info.value) and not marker.exists()


def test_a_tokenizer_config_with_auto_map_is_refused(tmp_path: Path) -> None:
    folder = save_tiny_base(tmp_path / "model")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["tokenization_evil.EvilTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(OmarError, match="tokenizer_config.json has auto_map"):
        load_model(str(folder), torch.device("cpu"), torch.float32)


def test_rollout_and_export_refuse_it_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "ran"
    folder = custom_code_model(tmp_path, marker)
    adapter = save_random_adapter(tiny_model(), tmp_path / "adapter")
    capsys.readouterr()
    out = tmp_path / "e.jsonl"
    assert main(["rollout", "negotiation", "--model", str(folder), "--episodes", "1", "--out", str(out)]) == 2
    rollout_err = capsys.readouterr().err.strip()
    assert (
        main(["export", str(adapter), "--merge", "--model", str(folder), "--out", str(tmp_path / "m")]) == 2
    )
    export_err = capsys.readouterr().err.strip()
    for command, err in (("rollout", rollout_err), ("export", export_err)):
        assert err.startswith(f"omar {command}: error: model {folder} needs its own code") and "\n" not in err
    assert not marker.exists()


def test_every_transformers_load_passes_trust_remote_code_false(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = save_tiny_base(tmp_path / "model")
    calls: list[dict[str, Any]] = []
    for auto in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        original = auto.from_pretrained.__func__  # type: ignore[attr-defined]

        def spy(cls: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            calls.append(kwargs)
            return _original(cls, *args, **kwargs)

        monkeypatch.setattr(auto, "from_pretrained", classmethod(spy))
    load_model(str(folder), torch.device("cpu"), torch.float32)
    assert len(calls) == 2 and all(call.get("trust_remote_code") is False for call in calls)
