"""Role nodes: observe, ask the role's model (or a person, through `interrupt`), parse the action, and
return the state update. Usable in any StateGraph whose state has ConversationState's keys."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.types import interrupt

from langgraph_omar.conversation.actions import LEAVE, ActionContext
from langgraph_omar.conversation.calls import ainvoke_model, invoke_model, stamp_call
from langgraph_omar.conversation.observations import messages_as_dicts, observe
from langgraph_omar.conversation.roles import Role
from langgraph_omar.conversation.state import FallbackRecord, current_turn, make_utterance
from langgraph_omar.tracing import record_human_turn


class NodeFunction(Protocol):
    """A LangGraph node taking the state (any mapping with ConversationState's keys) and its config."""

    def __call__(self, state: Any, config: RunnableConfig) -> dict[str, Any]: ...


class AsyncNodeFunction(Protocol):
    def __call__(self, state: Any, config: RunnableConfig) -> Awaitable[dict[str, Any]]: ...


def role_node(role: Role) -> NodeFunction:
    """A sync node function for `role`. The node's RunnableConfig is passed to `model.invoke` through the
    shared action layer (`conversation.calls`), so callbacks and metadata reach the model call, whose `role` is
    the role's name and whose fallback, if any, lands on its recorded turn. LangGraph runs it in a thread
    under `ainvoke`."""

    def node(state: Mapping[str, Any], config: RunnableConfig) -> dict[str, Any]:
        messages = observe(state, role)
        if role.human:
            return move_update(role, state, ask_person(role, state, messages))
        reply = invoke_model(role.model_in(state), messages, config, role=role.name)
        return move_update(role, state, reply.text, call_id=reply.call_id)

    node.__name__ = role.name
    return node


def arole_node(role: Role) -> AsyncNodeFunction:
    """The async twin of `role_node` (`await model.ainvoke(messages, config)`), for `ainvoke`/`abatch`."""

    async def node(state: Mapping[str, Any], config: RunnableConfig) -> dict[str, Any]:
        messages = observe(state, role)
        if role.human:
            return move_update(role, state, ask_person(role, state, messages))
        reply = await ainvoke_model(role.model_in(state), messages, config, role=role.name)
        return move_update(role, state, reply.text, call_id=reply.call_id)

    node.__name__ = role.name
    return node


def role_runnable(role: Role) -> RunnableLambda:
    """Both twins in one Runnable: `graph.invoke` runs the sync one, `ainvoke`/`abatch` the async one."""
    return RunnableLambda(role_node(role), afunc=arole_node(role), name=role.name)


def ask_person(role: Role, state: Mapping[str, Any], messages: list[BaseMessage]) -> str:
    """Interrupt the graph with the role's observation; the resume value (`Command(resume="text")`, or
    `{"text": ...}`) is the person's move. Needs a checkpointer, as every LangGraph interrupt does."""
    answer = interrupt(
        {"role": role.name, "turn": current_turn(state), "messages": messages_as_dicts(messages)}
    )
    if isinstance(answer, Mapping) and isinstance(answer.get("text"), str):
        text = answer["text"]
    elif isinstance(answer, str):
        text = answer
    else:
        raise ValueError(
            f"human role {role.name!r}: resume value must be a str or {{'text': str}}, got {type(answer).__name__}"
        )
    record_human_turn(role.name, messages, text)  # a TraceRecorder records it as the person's turn
    return text


def move_update(
    role: Role, state: Mapping[str, Any], text: str, *, call_id: str | None = None
) -> dict[str, Any]:
    """The state update for one move: the utterance, any recorded fallback (naming the model call `call_id`,
    so that the trace recorder marks its turn), and a departure."""
    turn = current_turn(state)
    parsed = role.action_format.parse(text, ActionContext(role=role.name, turn=turn, state=state))
    update: dict[str, Any] = {
        "transcript": [
            make_utterance(
                role.name,
                text,
                turn=turn,
                action=parsed.action,
                visible_to=role.audience_in(state),
                call_id=call_id,
            )
        ]
    }
    if parsed.fallback is not None:
        record = FallbackRecord(
            role=role.name,
            turn=turn,
            raw=text,
            fallback=parsed.fallback,
            reason=parsed.reason or "",
            action=parsed.action,
        )
        update["fallbacks"] = stamp_call([record], call_id)
    if parsed.action.get("type") == LEAVE:
        update["left"] = [role.name]
    return update
