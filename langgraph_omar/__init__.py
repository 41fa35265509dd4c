"""langgraph-omar: One Model, All Roles — multi-agent self-play RL for LangGraph social agents."""

import os as _os

# Before torch loads OpenMP: threads waiting for work sleep at once instead of spinning, so that two
# processes on the same cores (a rollout beside a training run) each keep a fair share instead of burning
# each other's time slices (docs/threads.md). An explicit OMP_WAIT_POLICY wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from langgraph_omar.chat_model import ChatPolicy
from langgraph_omar.envs.environment import Environment, Metric, option
from langgraph_omar.envs.registry import load_environment
from langgraph_omar.errors import OmarError
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.serving.models import DEFAULT_MODEL
from langgraph_omar.serving.records import TokenRecord, token_records
from langgraph_omar.serving.sampling import SamplingParams
from langgraph_omar.tracing import TraceRecorder

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
