"""Werewolf (the bundled classic_6 variant) for `langgraph dev` / LangGraph Studio.

Input: {"seed": 7} (roles, ties and fallbacks follow the seed), or {}. Model and adapter: see
`langgraph_omar.serving`. A whole game takes many supersteps: pass a large `recursion_limit` in the run's
config (e.g. 2000) when the server's default is lower.
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig

from langgraph_omar.envs import werewolf
from langgraph_omar.serving import served_graph


async def graph(config: RunnableConfig) -> Any:
    return await served_graph(config, lambda model: werewolf.build_graph(model=model))
