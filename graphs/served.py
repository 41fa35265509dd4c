"""Every registered environment as a graph for `langgraph dev` / LangGraph Studio; `langgraph.json` lists them.

Input: the environment's `sample_input(seed)` (`omar envs NAME` says what it holds), or {} for its default
scenario. Model and adapter: OMAR_MODEL / OMAR_ADAPTER, or per run `{"configurable": {"adapter": DIR}}` (see
`langgraph_omar.dev_server`). A Werewolf game takes many supersteps: pass a large `recursion_limit` in the
run's config (e.g. 2000) when the server's default is lower.
"""

from __future__ import annotations

from langgraph_omar.dev_server import served_environment
from langgraph_omar.envs.registry import registered

globals().update({name: served_environment(name) for name in registered()})
