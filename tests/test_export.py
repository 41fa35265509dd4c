from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from adapter_helpers import save_random_adapter, save_tiny_base
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from langgraph_omar.chat_model import ChatPolicy
from langgraph_omar.cli import main
from langgraph_omar.errors import OmarError
from langgraph_omar.export import EXPORT_INFO, export_merged
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.testing import tiny_model


@pytest.fixture(scope="module")
def base_and_adapter(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("export")
    base = save_tiny_base(root / "base")
    adapter = save_random_adapter(AutoModelForCausalLM.from_pretrained(base), root / "adapter")
    return base, adapter


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_merged_model_matches_base_plus_adapter(base_and_adapter: tuple[Path, Path], tmp_path: Path) -> None:
    base, adapter = base_and_adapter
    out = export_merged(adapter, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out)
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).eval()
    plain = AutoModelForCausalLM.from_pretrained(base)
    ids = torch.randint(3, 300, (2, 17), generator=torch.Generator().manual_seed(0))
    expected = _logits(reference, ids)
    torch.testing.assert_close(_logits(merged, ids), expected, atol=1e-4, rtol=1e-4)
    # the adapter matters: without it the logits differ, so the equality above is not vacuous
    assert (_logits(plain, ids) - expected).abs().max() > 1e-2
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", EXPORT_INFO} <= files
    assert AutoTokenizer.from_pretrained(out).chat_template is not None
    assert json.loads((out / EXPORT_INFO).read_text())["base_model"] == str(base)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_chat_policy_serves_the_merged_directory(base_and_adapter: tuple[Path, Path], tmp_path: Path) -> None:
    base, adapter = base_and_adapter
    out = export_merged(adapter, tmp_path / "merged")
    prompt = "How much for the bike?"
    merged_text = ChatPolicy(model=str(out), temperature=0.0, max_tokens=6).invoke(prompt).text
    # the same greedy call on the base with the adapter attached gives the same tokens, hence the same text
    engine = SharedPolicy.get(str(base))
    name = engine.load_adapter(adapter, name="export-check")
    adapted = ChatPolicy(model=str(base), adapter=name, temperature=0.0, max_tokens=6).invoke(prompt).text
    plain = ChatPolicy(model=str(base), temperature=0.0, max_tokens=6).invoke(prompt).text
    assert merged_text == adapted
    assert merged_text != plain


def test_base_with_leftover_gguf_quantization_config_exports(
    base_and_adapter: tuple[Path, Path], tmp_path: Path
) -> None:
    # the default model's cache (converted from GGUF) keeps GGUF's quantization_config in config.json,
    # and save_pretrained refuses a model so marked: the export must still save plain weights
    base, adapter = base_and_adapter
    marked = tmp_path / "marked-base"
    shutil.copytree(base, marked)
    config = json.loads((marked / "config.json").read_text())
    config["quantization_config"] = {"dequantize": False, "gguf_file": "x.gguf", "quant_method": "gguf"}
    (marked / "config.json").write_text(json.dumps(config))
    out = export_merged(adapter, tmp_path / "merged", model=str(marked))
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    ids = torch.tensor([[5, 9, 30, 2, 77]])
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).eval()
    torch.testing.assert_close(
        _logits(AutoModelForCausalLM.from_pretrained(out), ids), _logits(reference, ids), atol=1e-4, rtol=1e-4
    )


def test_existing_output_is_kept_unless_overwrite(
    base_and_adapter: tuple[Path, Path], tmp_path: Path
) -> None:
    _, adapter = base_and_adapter
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(OmarError, match="not empty"):
        export_merged(adapter, out)
    export_merged(adapter, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()


def test_missing_adapter_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(OmarError, match="adapter not found") as info:
        export_merged(tmp_path / "nope", tmp_path / "out")
    assert "\n" not in str(info.value)


def test_adapter_for_a_wider_base_is_rejected(base_and_adapter: tuple[Path, Path], tmp_path: Path) -> None:
    base, _ = base_and_adapter
    wide = save_random_adapter(tiny_model(hidden_size=64), tmp_path / "wide")
    with pytest.raises(OmarError, match="does not fit model") as info:
        export_merged(wide, tmp_path / "out", model=str(base))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()


def test_adapter_for_a_deeper_base_is_rejected(base_and_adapter: tuple[Path, Path], tmp_path: Path) -> None:
    # same shapes, more layers: peft only warns about the extra keys; the export must refuse
    base, _ = base_and_adapter
    deep = save_random_adapter(tiny_model(layers=4), tmp_path / "deep")
    with pytest.raises(OmarError, match="no place in the model"):
        export_merged(deep, tmp_path / "out", model=str(base))


def test_cli_export(
    base_and_adapter: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, adapter = base_and_adapter
    out = tmp_path / "cli-merged"
    assert main(["export", str(adapter), "--out", str(out)]) == 2  # --merge is required
    assert "pass --merge" in capsys.readouterr().err
    assert main(["export", str(adapter), "--merge", "--out", str(out)]) == 0
    assert (out / "model.safetensors").exists()
    capsys.readouterr()  # drop the loading progress bars
    assert main(["export", str(tmp_path / "missing"), "--merge", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("omar export: error: adapter not found") and "\n" not in err
