"""LoRA adapters on disk: the files an adapter folder must have, and whether it fits a base model.

Every loader (the engine serving `ChatPolicy(adapter=...)`, `omar eval`, the dev server, `omar export`) uses
these checks, so an adapter is either refused everywhere, with one line, or accepted everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peft import get_peft_model_state_dict
from safetensors import safe_open

from langgraph_omar.errors import OmarError, first_line

WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"


def check_adapter_files(adapter: Path) -> None:
    """An OmarError unless `adapter` is a folder with an adapter config and safetensors weights (the only
    weights format loaded: a pickled `adapter_model.bin` could run code)."""
    if not adapter.is_dir():
        raise OmarError(f"adapter not found: {adapter} is not a directory")
    if not (adapter / CONFIG_FILE).is_file():
        raise OmarError(f"adapter not found: {adapter} has no {CONFIG_FILE}")
    if not (adapter / WEIGHTS_FILE).is_file():
        raise OmarError(f"{adapter} has no {WEIGHTS_FILE} (only safetensors adapters are loaded)")


def check_adapter_fits(model: Any, adapter: Path, base_name: str, adapter_name: str = "default") -> None:
    """An OmarError unless every weight in the adapter's file has a place in the peft `model` it was loaded
    into as `adapter_name`, and every LoRA weight that load created is in the file.

    peft itself only warns about file weights that match nothing (an adapter made for a deeper model, say),
    and leaves LoRA layers the file does not fill at their initial values: both ways are checked here.
    """
    with safe_open(str(adapter / WEIGHTS_FILE), framework="pt") as weights:
        in_file = set(weights.keys())
    in_model = set(get_peft_model_state_dict(model, adapter_name=adapter_name))
    unplaced, unfilled = sorted(in_file - in_model), sorted(in_model - in_file)
    if unplaced or unfilled:
        example = (unplaced or unfilled)[0]
        raise OmarError(
            f"adapter {adapter} does not fit model {base_name!r}: {len(unplaced)} adapter weights have no "
            f"place in the model and {len(unfilled)} LoRA weights of the model are not in the adapter "
            f"(e.g. {example})"
        )


def load_error(adapter: Path, base_name: str, error: BaseException) -> OmarError:
    """peft's own refusal (shapes that differ, say) as one line."""
    return OmarError(f"adapter {adapter} does not fit model {base_name!r}: {first_line(error, 200)}")
