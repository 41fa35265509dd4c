"""How the roles' calls are sampled, declared once: `omar rollout` and `omar eval` (`ServingSettings`) and the
self-play section of the training config (`SamplingSettings`, its subclass in rl/config.py) share these fields,
their help text and their checks, and the command line makes every command's flags from them the same way.

This module imports no torch, so the training config and the command line read the default model's name here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from langgraph_omar.errors import ConfigError

DEFAULT_MODEL = "smollm2-135m-instruct"

# Rollout and evaluation sample at 0.7, the usual setting of a chat model at work; self-play trains at 1.0
# (rl/config.py says why).
TEMPERATURE = 0.7
MAX_TOKENS = 64


@dataclass(kw_only=True)
class SamplingSettings:
    """The model and its sampling, for every role's calls. Every field carries its meaning in
    `metadata['help']`."""

    key_prefix: ClassVar[str] = ""  # how an error names a field: "selfplay." in the training config

    model: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "the served model: an embedded name, a model directory or a hub id"},
    )
    temperature: float = field(default=TEMPERATURE, metadata={"help": "sampling temperature of every role"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling of every role (1: off)"})
    max_tokens: int = field(default=MAX_TOKENS, metadata={"help": "the most new tokens per model call"})

    def __post_init__(self) -> None:
        key = self.key_prefix
        if not (math.isfinite(self.temperature) and self.temperature >= 0):  # NaN fails every comparison
            raise ConfigError(f"{key}temperature must be a finite number >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"{key}top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ConfigError(f"{key}max_tokens must be >= 1, got {self.max_tokens}")


@dataclass(kw_only=True)
class ServingSettings(SamplingSettings):
    """Sampling settings and the device of the one engine a command serves from (self-play has no device
    setting: accelerate gives each process its own)."""

    device: str | None = field(
        default=None, metadata={"help": "torch device (default: cuda when available, else cpu)"}
    )
