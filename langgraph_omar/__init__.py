"""langgraph-omar: One Model, All Roles — multi-agent self-play RL for LangGraph social agents.

The public names load on first use (PEP 562): `import langgraph_omar.tracing` alone does not import torch or the
engine, so recording a hosted model's calls costs no model runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langgraph_omar.chat_model import ChatPolicy
    from langgraph_omar.envs.environment import Environment, Metric, option
    from langgraph_omar.envs.registry import load_environment
    from langgraph_omar.errors import OmarError
    from langgraph_omar.serving.engine import SharedPolicy
    from langgraph_omar.serving.records import TokenRecord, token_records
    from langgraph_omar.serving.sampling import SamplingParams
    from langgraph_omar.serving.settings import DEFAULT_MODEL
    from langgraph_omar.tracing import TraceRecorder

# public name -> the module that defines it
_LAZY = {
    "DEFAULT_MODEL": "langgraph_omar.serving.settings",
    "ChatPolicy": "langgraph_omar.chat_model",
    "Environment": "langgraph_omar.envs.environment",
    "Metric": "langgraph_omar.envs.environment",
    "OmarError": "langgraph_omar.errors",
    "SamplingParams": "langgraph_omar.serving.sampling",
    "SharedPolicy": "langgraph_omar.serving.engine",
    "TokenRecord": "langgraph_omar.serving.records",
    "TraceRecorder": "langgraph_omar.tracing",
    "load_environment": "langgraph_omar.envs.registry",
    "option": "langgraph_omar.envs.environment",
    "token_records": "langgraph_omar.serving.records",
}

__all__ = [
    "DEFAULT_MODEL",
    "ChatPolicy",
    "Environment",
    "Metric",
    "OmarError",
    "SamplingParams",
    "SharedPolicy",
    "TokenRecord",
    "TraceRecorder",
    "load_environment",
    "option",
    "token_records",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'langgraph_omar' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
