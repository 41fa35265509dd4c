"""Multi-role conversations as LangGraph state graphs: roles, observations, turn orders, termination,
action formats, human players, and `build_conversation_graph` for the common case. Every piece also works
in a StateGraph written by hand (see `role_node`, `observe`, `ConversationState`)."""

from __future__ import annotations

from langgraph_omar.conversation.actions import (
    ActionContext,
    ActionFormat,
    ChoiceAction,
    FreeText,
    ParsedAction,
    find_choice,
)
from langgraph_omar.conversation.builder import build_conversation_graph
from langgraph_omar.conversation.nodes import arole_node, ask_person, move_update, role_node, role_runnable
from langgraph_omar.conversation.observations import observe, system_prompt, visible_transcript
from langgraph_omar.conversation.roles import Role, brief_for
from langgraph_omar.conversation.router import TurnPlan, plan_next_turn, router_node
from langgraph_omar.conversation.scoring import Outcome, conversation_metrics, score_node
from langgraph_omar.conversation.scripted import ScriptedChatModel
from langgraph_omar.conversation.state import (
    ConversationState,
    FallbackRecord,
    Scenario,
    Utterance,
    current_turn,
    make_utterance,
)
from langgraph_omar.conversation.termination import Termination, is_silent_utterance
from langgraph_omar.conversation.turn_order import round_robin, simultaneous

__all__ = [
    "ActionContext",
    "ActionFormat",
    "ChoiceAction",
    "ConversationState",
    "FallbackRecord",
    "FreeText",
    "Outcome",
    "ParsedAction",
    "Role",
    "Scenario",
    "ScriptedChatModel",
    "Termination",
    "TurnPlan",
    "Utterance",
    "arole_node",
    "ask_person",
    "brief_for",
    "build_conversation_graph",
    "conversation_metrics",
    "current_turn",
    "find_choice",
    "is_silent_utterance",
    "make_utterance",
    "move_update",
    "observe",
    "plan_next_turn",
    "role_node",
    "role_runnable",
    "round_robin",
    "router_node",
    "score_node",
    "simultaneous",
    "system_prompt",
    "visible_transcript",
]
