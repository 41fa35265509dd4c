"""SOTOPIA (two characters, private goals, a judge) for `langgraph dev` / LangGraph Studio.

Input: `langgraph_omar.envs.sotopia.sample_input(seed)`, or {} for the first built-in episode. The served
model plays both characters and the judge. Model and adapter: see `langgraph_omar.serving`.
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig

from langgraph_omar.envs import sotopia
from langgraph_omar.serving import served_graph


async def graph(config: RunnableConfig) -> Any:
    return await served_graph(config, lambda model: sotopia.build_graph(model=model))
