"""Tiny base models and random LoRA adapters on disk, for the export, evaluation and serving tests."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from langgraph_omar.testing import tiny_model, tiny_tokenizer


def save_tiny_base(path: Path, seed: int = 0, **model_kwargs: int) -> Path:
    """A tiny Llama with its tokenizer and chat template, saved as a transformers model directory."""
    tiny_model(seed, **model_kwargs).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def save_random_adapter(
    model: torch.nn.Module, path: Path, seed: int = 1, base_name: str | None = None
) -> Path:
    """A LoRA adapter with random (non-zero) A and B on q_proj and v_proj of `model`, saved at `path`.

    The model is deep-copied first, so the caller's model stays free of LoRA layers.
    """
    import copy

    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    if base_name is not None:
        config.base_model_name_or_path = base_name
    peft_model = get_peft_model(copy.deepcopy(model), config)
    with torch.no_grad():  # make the adapter's effect large enough to change greedy tokens
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(20.0)
    peft_model.save_pretrained(str(path))
    return path
