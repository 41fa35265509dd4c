"""Multi-role conversations as LangGraph state graphs: roles, observations, turn orders, termination,
action formats, human players, and `build_conversation_graph` for the common case. Every piece also works
in a StateGraph written by hand (see `role_node`, `observe`, `ConversationState`).

    from langgraph_omar.conversation import ChoiceAction, Role, build_conversation_graph

    roles = [
        Role("seller", persona="You sell a bike.", private_info="Do not go below 80.", model=chat_model),
        Role("buyer", persona="You want the bike.", goal="Pay at most 100.", model=chat_model),
    ]
    graph = build_conversation_graph(roles, turn_order="round_robin", max_turns=8, reward_fn=my_reward)
    final = graph.invoke({"scenario": {"id": "bike-1", "seed": 3}})
    final["transcript"], final["rewards"], final["metrics"], final["fallbacks"]

Every role node calls its model through the shared action layer (`conversation.calls`: `invoke_model`), so a
fallback, or a per-turn reward (`turn_reward`, in the state's `turn_rewards`), lands on the recorded turn of the
call it concerns (`Turn.fallback`, `Turn.reward`); environments with nodes of their own (Werewolf) use it too.

A role with several action formats (talk by day, vote at night) is several `Role` objects with the same
name, each added by hand under its own node name: `add_node("bob_vote", role_node(bob_voting),
metadata={"role": "bob"})`; the transcript attributes both to "bob".
"""

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
from langgraph_omar.conversation.calls import (
    ModelReply,
    TurnReward,
    ainvoke_model,
    invoke_model,
    stamp_call,
    turn_reward,
)
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
    "ModelReply",
    "Outcome",
    "ParsedAction",
    "Role",
    "Scenario",
    "ScriptedChatModel",
    "Termination",
    "TurnPlan",
    "TurnReward",
    "Utterance",
    "ainvoke_model",
    "arole_node",
    "ask_person",
    "brief_for",
    "build_conversation_graph",
    "conversation_metrics",
    "current_turn",
    "find_choice",
    "invoke_model",
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
    "stamp_call",
    "system_prompt",
    "turn_reward",
    "visible_transcript",
]
