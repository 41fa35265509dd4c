"""Which floating-point type each phase computes in: serving prefill, serving decode, the update.

`auto` reads what the device's matrix units have, not a guess. On a GPU every phase runs in bf16. On a CPU
bf16 pays only where the cores have bf16 dot products (`avx512_bf16`, or AMX's `amx_bf16` tiles): there the
many-token phases, prefill and the update's forward and backward, run in bf16 (measured on a Zen 4 core with
avx512_bf16: prefill x1.85-2.4, forward + backward x2.2). The one-token decode step, whose small matrix
products are bound by reading the weights, is slower in bf16 on avx512_bf16 alone (Zen 4: 170 -> 125
tokens/s at batch 32) but faster with AMX tiles (an Intel Xeon core with amx_bf16: 224 -> 118 ms a step at
batch 16, x1.9), so decode is bf16 only with `amx_bf16`. Elsewhere everything stays float32.

The decode type is the served weights' type (one set of weights serves and trains). With float32 weights a bf16
prefill or update runs under autocast, which would cast every weight it multiplies at every forward (~130 ms
for SmolLM2's Linear weights on one Xeon core, measured: as long as a 100-token prefill, a tenth of an update
micro-batch); the frozen base weights never change (only LoRA trains), so `frozen_weight_casts` makes each cast
once and the forward runs on the copies (`torch.func.functional_call`), with the same values autocast would
make. With bf16 weights it is a plain forward. The keys and values a prefill leaves in
the KV cache are cast to the decode type before decoding, so the prefix cache holds one type. A trained LoRA
adapter stays float32 on bf16 weights (peft keeps adapters in float32), and the update's autocast decides its
matrix products' type.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import torch
from torch.utils.weak import WeakIdKeyDictionary

from langgraph_omar.errors import OmarError

DTYPES = ("auto", "float32", "bfloat16")
PHASES = ("prefill", "decode", "update")
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def cpu_flags_from(cpuinfo: str) -> frozenset[str]:
    """The feature flags of the first processor in a /proc/cpuinfo text (empty when there is none)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This machine's CPU feature flags (Linux; empty elsewhere, which means float32)."""
    try:
        return cpu_flags_from(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return frozenset()


def has_fast_bf16(device: torch.device, flags: frozenset[str] | None = None) -> bool:
    """Whether `device` multiplies bf16 matrices natively: a GPU that supports bf16, or a CPU with `flags`
    (default: this machine's) naming bf16 dot products."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    return bool(BF16_CPU_FLAGS & (cpu_flags() if flags is None else flags))


def resolve_dtype(
    setting: str | torch.dtype | None, phase: str, device: torch.device, flags: frozenset[str] | None = None
) -> torch.dtype:
    """The dtype `phase` (one of PHASES) computes in on `device` for `setting` ("auto", "float32",
    "bfloat16", a torch dtype; None means auto). `flags`: the CPU's feature flags (default: this machine's)."""
    if phase not in PHASES:
        raise OmarError(f"unknown phase {phase!r}: expected one of {', '.join(PHASES)}")
    if isinstance(setting, torch.dtype):
        return setting
    if setting is None or setting == "auto":
        if device.type == "cuda":
            return torch.bfloat16
        if phase == "decode":
            return (
                torch.bfloat16 if "amx_bf16" in (cpu_flags() if flags is None else flags) else torch.float32
            )
        return torch.bfloat16 if has_fast_bf16(device, flags) else torch.float32
    if setting not in _NAMES:
        raise OmarError(f"{phase} dtype {setting!r}: expected one of {', '.join(DTYPES)}")
    return _NAMES[setting]


def mixed_precision(setting: str, device: torch.device, flags: frozenset[str] | None = None) -> str:
    """accelerate's `mixed_precision` for the update: `setting` unless "auto", which is "bf16" where
    `resolve_dtype("auto", "update", ...)` is bf16 and "no" elsewhere."""
    if setting != "auto":
        return setting
    return "bf16" if resolve_dtype("auto", "update", device, flags) == torch.bfloat16 else "no"


def weights_dtype(model: torch.nn.Module) -> torch.dtype:
    """The type of a causal LM's weights (its input embeddings'): the type it decodes in."""
    embeddings = model.get_input_embeddings()  # type: ignore[operator]
    return cast(torch.dtype, embeddings.weight.dtype)


_CASTS: WeakIdKeyDictionary = WeakIdKeyDictionary()  # weight -> {dtype: its copy}, while the weight lives


def frozen_weight_casts(module: torch.nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """{name: copy in `dtype`} (bf16 or fp16) of the weights autocast casts at every forward of `module`:
    those of its frozen `nn.Linear` layers of another type, not the output head (kept float32 by `autocast_forward`),
    not LoRA's own layers (peft runs them in their type). Each copy is made once per weight and shared by
    every module holding it; names are relative to `module`, for `torch.func.functional_call`."""
    if dtype not in (torch.bfloat16, torch.float16):  # autocast lowers float32 only to these
        return {}
    head_of = getattr(module, "get_output_embeddings", None)
    head = head_of() if callable(head_of) else None
    casts = {}
    for name, layer in module.named_modules():
        if not isinstance(layer, torch.nn.Linear) or layer is head:
            continue
        weight = layer.weight
        if (
            weight.requires_grad
            or weight.dtype == dtype
            or any(p.startswith("lora_") for p in name.split("."))
        ):
            continue
        copies = _CASTS.setdefault(weight, {})
        if dtype not in copies:
            with torch.inference_mode(False):  # a copy made while serving can be saved for a backward later
                copies[dtype] = weight.detach().to(dtype)
        casts[f"{name}.weight" if name else "weight"] = copies[dtype]
    return casts


@contextlib.contextmanager
def autocast_forward(model: torch.nn.Module, dtype: torch.dtype | None) -> Iterator[dict[str, torch.Tensor]]:
    """Run `model`'s forwards inside under `dtype` autocast when it differs from the weights' type (else
    unchanged), with the output head in float32: sampled and recorded log-probabilities then come from
    float32 logits of the (autocast) last hidden state. Yields the weights to run the forward on
    (`frozen_weight_casts`; empty when nothing is cast)."""
    if dtype is None or dtype == weights_dtype(model):
        yield {}
        return
    head = model.get_output_embeddings()  # type: ignore[operator]
    device_type = head.weight.device.type

    def float32_head(hidden: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type, enabled=False):
            return torch.nn.functional.linear(
                hidden.to(head.weight.dtype), head.weight, getattr(head, "bias", None)
            )

    head.forward = float32_head
    try:
        with torch.autocast(device_type, dtype=dtype):
            yield frozen_weight_casts(model, dtype)
    finally:
        del head.forward  # the class's forward again
