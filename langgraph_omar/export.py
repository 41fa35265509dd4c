"""`omar export ADAPTER --merge --out DIR`: a LoRA adapter merged into its base as a standalone model.

The base is loaded fresh (float32 on the CPU, so the merge is exact), the adapter attached with peft and
checked to fit (every adapter weight has a place in the model and every LoRA layer gets its weights), then
`merge_and_unload` folds W + (alpha / r) B A into plain weights. The result is a transformers model directory
(safetensors, tokenizer, chat template, generation config) that `AutoModelForCausalLM.from_pretrained(DIR)`
loads and `ChatPolicy(model=DIR)` serves. It is written into a temporary folder beside DIR, flushed to disk
and renamed into place: a crash leaves either the old DIR or the new one, never half of one.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from langgraph_omar.errors import OmarError
from langgraph_omar.serving.adapters import check_adapter_files, check_adapter_fits, load_error
from langgraph_omar.serving.models import load_model

EXPORT_INFO = "omar_export.json"  # provenance written beside the weights
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def read_adapter_config(adapter: Path) -> dict[str, Any]:
    """The adapter folder's `adapter_config.json`, checked to exist beside a safetensors file."""
    check_adapter_files(adapter)
    config_path = adapter / "adapter_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OmarError(f"{config_path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise OmarError(f"{config_path}: expected a JSON object")
    return config


def attach_adapter(base: Any, adapter: Path, base_name: str) -> PeftModel:
    """`base` with the adapter loaded; an OmarError when the adapter was made for another architecture."""
    try:
        model = PeftModel.from_pretrained(base, str(adapter))
    except (RuntimeError, KeyError, ValueError) as exc:
        raise load_error(adapter, base_name, exc) from None
    check_adapter_fits(model, adapter, base_name)
    return model


def without_quantization_metadata(model: Any) -> Any:
    """`model` itself, or a plain copy when its config still carries a `quantization_config`.

    A base converted from GGUF keeps GGUF's `quantization_config` in its config although its weights are
    plain tensors, and `save_pretrained` refuses any model so marked; a fresh model built from the config
    without that entry, given the same state dict, computes the same logits and saves.
    """
    if getattr(model.config, "quantization_config", None) is None:
        return model
    config = copy.deepcopy(model.config)
    del config.quantization_config
    plain = AutoModelForCausalLM.from_config(
        config, dtype=next(model.parameters()).dtype, trust_remote_code=False
    )
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    return plain.eval()


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    descriptor = os.open(root, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished `tmp` to `out`; an existing `out` is set aside first and removed after."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_merged(
    adapter: str | Path,
    out: str | Path,
    model: str | None = None,
    *,
    dtype: str = "float32",
    overwrite: bool = False,
) -> Path:
    """Merge `adapter` into its base model and write a standalone model directory at `out`; returns `out`.

    model: the base (an embedded name, a model directory or a hub id); default: the adapter config's
    `base_model_name_or_path`. dtype: of the saved weights (the merge itself runs in float32).
    overwrite: replace an existing non-empty `out` (otherwise an OmarError).
    """
    adapter_dir, out_dir = Path(adapter).expanduser(), Path(out).expanduser()
    if dtype not in DTYPES:
        raise OmarError(f"dtype {dtype!r} is not supported; expected one of {sorted(DTYPES)}")
    if out_dir.exists() and not out_dir.is_dir():
        raise OmarError(f"{out_dir} is a file, not a folder; choose another --out (a file is never replaced)")
    config = read_adapter_config(adapter_dir)
    base_name = model or config.get("base_model_name_or_path")
    if not base_name:
        raise OmarError(f"{adapter_dir}/adapter_config.json names no base model; pass the base with --model")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise OmarError(f"{out_dir} exists and is not empty; choose another --out or pass --overwrite")
    base, tokenizer = load_model(str(base_name), torch.device("cpu"), torch.float32)
    merged = attach_adapter(base, adapter_dir, str(base_name)).merge_and_unload()
    merged = without_quantization_metadata(merged).to(DTYPES[dtype]).eval()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes the folder private; the model is an ordinary folder
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        info = {"base_model": str(base_name), "adapter": str(adapter_dir.resolve()), "dtype": dtype}
        (tmp / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        _fsync_tree(tmp)
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


# ---- command line -----------------------------------------------------------------------------------------
