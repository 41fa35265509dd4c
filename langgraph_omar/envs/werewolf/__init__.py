"""Werewolf: a social-deduction environment for One Model, All Roles self-play.

The pieces, one concept per module:
    werewolf.config   roster, phase cycle and rule options from a JSON/YAML file (`load_werewolf_config`)
    werewolf.actions  lenient, never-raising parsing of KILL/INSPECT/SAVE/POISON/PASS/PROTECT/VOTE commands
                      into the conversation building blocks' `ParsedAction`, fallbacks included
    werewolf.state    the game state (TypedDict with reducers) and what each player may see (`observe`)
    werewolf.rules    the pure rules engine, and `play_game` to run a game without LangGraph
    werewolf.rewards  team rewards discounted for early elimination (per player and per game role), metrics
    werewolf.behaviour  MARO's behaviour-level rewards: each decision scored by its effect on the team
    werewolf.prompts  an observation -> chat messages
    werewolf.graph    the LangGraph StateGraph (`build_graph`)

Example:
    graph = build_graph(ChatPolicy(), bundled_config_path("guard_8"), seed=0)
    final = graph.invoke({"seed": 7})
    final["winner"], final["rewards"], final["agent_rewards"], final["metrics"], final["fallbacks"]
"""

from __future__ import annotations

from langgraph_omar.envs.werewolf.actions import fallback_move, parse_action, parse_speech
from langgraph_omar.envs.werewolf.behaviour import behaviour_scores
from langgraph_omar.envs.werewolf.config import (
    WerewolfConfig,
    WerewolfConfigError,
    WerewolfRules,
    bundled_config_path,
    load_werewolf_config,
)
from langgraph_omar.envs.werewolf.graph import build_graph
from langgraph_omar.envs.werewolf.prompts import build_messages
from langgraph_omar.envs.werewolf.rewards import aggregate_metrics, game_metrics, player_rewards, role_rewards
from langgraph_omar.envs.werewolf.rules import check_winner, legal_moves, new_game, play_game
from langgraph_omar.envs.werewolf.state import Observation, WerewolfState, observe


def sample_input(seed: int) -> dict[str, int]:
    """The input of game `seed` (the seed drives fallbacks and tie-breaks)."""
    return {"seed": seed}


__all__ = [
    "Observation",
    "WerewolfConfig",
    "WerewolfConfigError",
    "WerewolfRules",
    "WerewolfState",
    "aggregate_metrics",
    "behaviour_scores",
    "build_graph",
    "build_messages",
    "bundled_config_path",
    "check_winner",
    "fallback_move",
    "game_metrics",
    "legal_moves",
    "load_werewolf_config",
    "new_game",
    "sample_input",
    "observe",
    "parse_action",
    "parse_speech",
    "play_game",
    "player_rewards",
    "role_rewards",
]
