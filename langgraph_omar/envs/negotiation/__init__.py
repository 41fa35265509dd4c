"""Negotiation: buyer/seller bargaining and Deal-or-No-Deal item splits (judge-free, rule-based rewards).

Modules: `graph` (prompts, action format, the graph factory), `rules`, `actions`, `scenario`, `environment`
(the registered `Environment`).
"""

from langgraph_omar.envs.negotiation.graph import (
    SCENARIO_KEY,
    NegotiationActionFormat,
    action_from_dict,
    action_to_dict,
    build_graph,
    default_turn_prompt,
    episode_input,
    game_state,
    negotiation_metrics,
    public_description,
    result_from_state,
    role_briefs,
    sample_input,
    scenario_in,
    standing_offer,
)

__all__ = [
    "NegotiationActionFormat",
    "SCENARIO_KEY",
    "action_from_dict",
    "action_to_dict",
    "build_graph",
    "default_turn_prompt",
    "episode_input",
    "game_state",
    "negotiation_metrics",
    "public_description",
    "result_from_state",
    "role_briefs",
    "sample_input",
    "scenario_in",
    "standing_offer",
]
