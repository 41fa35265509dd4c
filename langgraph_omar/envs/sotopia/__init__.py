"""SOTOPIA: two characters with private social goals, scored on 7 dimensions by an LLM judge.

Modules: `graph` (the graph factory), `data` (scenario loading), `rules`, `judge`, `environment` (the
registered `Environment`).
"""

from langgraph_omar.envs.sotopia.graph import (
    DEFAULT_JUDGE_MAX_TOKENS,
    DEFAULT_JUDGE_RETRIES,
    DEFAULT_TURN_PROMPT,
    JUDGE_CONFIG,
    ROLES,
    SCENARIO_KEY,
    SotopiaActionFormat,
    build_graph,
    default_judge,
    episode_input,
    sample_input,
    transcript_text,
)

__all__ = [
    "DEFAULT_JUDGE_MAX_TOKENS",
    "DEFAULT_JUDGE_RETRIES",
    "DEFAULT_TURN_PROMPT",
    "JUDGE_CONFIG",
    "ROLES",
    "SCENARIO_KEY",
    "SotopiaActionFormat",
    "build_graph",
    "default_judge",
    "episode_input",
    "sample_input",
    "transcript_text",
]
