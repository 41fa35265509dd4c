"""Negotiation (price kind) for `langgraph dev` / LangGraph Studio; listed in langgraph.json.

Input: `langgraph_omar.envs.negotiation.sample_input(seed)` (a scenario), or {} for the default scenario.
Model and adapter: OMAR_MODEL / OMAR_ADAPTER, or per run `{"configurable": {"adapter": DIR}}` (see
`langgraph_omar.serving`).
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig

from langgraph_omar.envs import negotiation
from langgraph_omar.serving import served_graph


async def graph(config: RunnableConfig) -> Any:
    return await served_graph(config, lambda model: negotiation.build_graph(model=model))
