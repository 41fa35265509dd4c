"""Social environments: rules, scenario loaders and rewards, each with a graph factory `build_graph`.

- `langgraph_omar.envs.negotiation`: buyer/seller bargaining and Deal-or-No-Deal item splits (judge-free).
- `langgraph_omar.envs.sotopia`: SOTOPIA's social scenarios, scored by an LLM judge (`envs.judge`).
- `langgraph_omar.envs.werewolf`: the social-deduction game, roster and rules from a config file.

Modules are imported on demand (`from langgraph_omar.envs.negotiation import build_graph`): this package
imports nothing, so loading one environment never pulls in another's dependencies.
"""

from __future__ import annotations

# Environment name -> "module:factory" of its graph factory, for command lines and langgraph.json.
GRAPH_FACTORIES: dict[str, str] = {
    "negotiation": "langgraph_omar.envs.negotiation:build_graph",
    "sotopia": "langgraph_omar.envs.sotopia:build_graph",
    "werewolf": "langgraph_omar.envs.werewolf:build_graph",
}
