"""`build_conversation_graph`: the common case of a multi-role conversation as one compiled StateGraph.

    START -> next_turn --Send--> <role nodes> -> next_turn ... --> score -> END

One node per role, named after the role and added with `metadata={"role": name}` (tracing reads it); the
`next_turn` router counts turns, checks termination and fans out to the speakers with `Send`; the `score`
node writes `metrics`, and `rewards`/`reward_dimensions` when a reward function is given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from langgraph_omar.conversation.nodes import role_runnable
from langgraph_omar.conversation.roles import Role
from langgraph_omar.conversation.router import ROUTER_NODE, SCORE_NODE, router_node
from langgraph_omar.conversation.scoring import RewardFn, score_node
from langgraph_omar.conversation.state import ConversationState, Utterance
from langgraph_omar.conversation.termination import Termination, is_silent_utterance
from langgraph_omar.conversation.turn_order import TurnOrder, resolve_turn_order


def build_conversation_graph(
    roles: Sequence[Role],
    *,
    turn_order: TurnOrder = "round_robin",
    max_turns: int = 20,
    stop_when: Callable[[Mapping[str, Any]], bool] | None = None,
    max_silent_turns: int | None = None,
    leave_ends: Literal["any", "all"] = "any",
    is_silent: Callable[[Utterance], bool] = is_silent_utterance,
    reward_fn: RewardFn | None = None,
    state_schema: type[Any] = ConversationState,
    checkpointer: BaseCheckpointSaver | None = None,
    name: str = "conversation",
) -> CompiledStateGraph:
    """Compile a conversation among `roles`.

    turn_order: "round_robin", "simultaneous" (all active roles act each turn from the same context), or a
        selector `state -> list of role names`.
    max_turns / stop_when / max_silent_turns / leave_ends / is_silent: termination (see `Termination`).
    reward_fn: `state -> {role: float}` or an `Outcome`; its result lands in the final state's `rewards`,
        `reward_dimensions` and `metrics`.
    state_schema: ConversationState or a subclass of it with environment fields.
    checkpointer: required to resume human roles (`Command(resume=...)`); leave None when a server
        (`langgraph dev`) provides its own.
    Input: `{}` or the input fields documented in `langgraph_omar.conversation.state`.
    """
    roles = list(roles)
    if not roles:
        raise ValueError("build_conversation_graph: expected at least one role")
    if not all(isinstance(role, Role) for role in roles):
        raise ValueError("build_conversation_graph: every item of `roles` must be a Role")
    role_names = [role.name for role in roles]
    duplicates = sorted({n for n in role_names if role_names.count(n) > 1})
    if duplicates:
        raise ValueError(f"build_conversation_graph: role names must be unique, repeated: {duplicates}")
    termination = Termination(
        max_turns=max_turns,
        max_silent_turns=max_silent_turns,
        leave_ends=leave_ends,
        stop_when=stop_when,
        is_silent=is_silent,
    )
    select = resolve_turn_order(turn_order, role_names)

    graph = StateGraph(state_schema)
    graph.add_node(
        ROUTER_NODE, router_node(role_names, select, termination), destinations=(*role_names, SCORE_NODE)
    )
    for role in roles:
        graph.add_node(role.name, role_runnable(role), metadata={"role": role.name})
        graph.add_edge(role.name, ROUTER_NODE)
    graph.add_node(SCORE_NODE, score_node(role_names, reward_fn))
    graph.add_edge(START, ROUTER_NODE)
    graph.add_edge(SCORE_NODE, END)
    return graph.compile(checkpointer=checkpointer, name=name)
