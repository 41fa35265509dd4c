"""langgraph-omar: One Model, All Roles — multi-agent self-play RL for LangGraph social agents."""

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
