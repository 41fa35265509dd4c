"""langgraph-omar: One Model, All Roles — multi-agent self-play RL for LangGraph social agents."""

from langgraph_omar.chat_model import ChatPolicy
from langgraph_omar.engine import SharedPolicy
from langgraph_omar.errors import OmarError
from langgraph_omar.models import DEFAULT_MODEL
from langgraph_omar.records import TokenRecord, token_records
from langgraph_omar.sampling import SamplingParams
from langgraph_omar.tracing import TraceRecorder

__all__ = [
    "DEFAULT_MODEL",
    "ChatPolicy",
    "OmarError",
    "SamplingParams",
    "SharedPolicy",
    "TokenRecord",
    "TraceRecorder",
    "token_records",
]
