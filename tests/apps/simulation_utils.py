"""The harness of LangGraph's "chat bot benchmarking using simulation" tutorial (its simulation_utils.py),
kept as the tutorial has it: a simulated user (a prompt and a chat model) and a StateGraph of two nodes,
`user` and `assistant`, that swaps the messages' roles for the simulated user, preceded by a step that turns
a dataset example into the first message. Only the imports of langchain_community and langchain_openai are
gone (they served the OpenAI defaults, and the test environment lacks them), so `llm` is required."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.runnables import chain as as_runnable
from langgraph.graph import END, START, StateGraph


def create_simulated_user(system_prompt: str, llm: Runnable) -> Runnable[dict, AIMessage]:
    return ChatPromptTemplate.from_messages(
        [("system", system_prompt), MessagesPlaceholder(variable_name="messages")]
    ) | llm.with_config(run_name="simulated_user")


Messages = list[AnyMessage] | AnyMessage


def add_messages(left: Messages, right: Messages) -> Messages:
    if not isinstance(left, list):
        left = [left]
    if not isinstance(right, list):
        right = [right]
    return left + right


class SimulationState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    inputs: dict[str, Any] | None


def create_chat_simulator(
    assistant: Callable[[list[AnyMessage]], str | AIMessage] | Runnable[list[AnyMessage], str | AIMessage],
    simulated_user: Runnable[dict, AIMessage],
    *,
    input_key: str,
    max_turns: int = 6,
    should_continue: Callable[[SimulationState], str] | None = None,
) -> Runnable:
    graph_builder = StateGraph(SimulationState)
    graph_builder.add_node("user", _create_simulated_user_node(simulated_user))
    graph_builder.add_node("assistant", _fetch_messages | assistant | _coerce_to_message)
    graph_builder.add_edge("assistant", "user")
    graph_builder.add_conditional_edges(
        "user", should_continue or functools.partial(_should_continue, max_turns=max_turns)
    )
    graph_builder.add_edge(START, "assistant" if input_key is not None else "user")
    return RunnableLambda(_prepare_example).bind(input_key=input_key) | graph_builder.compile()


def _prepare_example(inputs: dict[str, Any], input_key: str | None = None) -> dict[str, Any]:
    if input_key is not None:
        if input_key not in inputs:
            raise ValueError(
                f"Dataset's example input must contain the provided input key: '{input_key}'.\n"
                f"Found: {list(inputs.keys())}"
            )
        messages = [HumanMessage(content=inputs[input_key])]
        return {"inputs": {k: v for k, v in inputs.items() if k != input_key}, "messages": messages}
    return {"inputs": inputs, "messages": []}


def _invoke_simulated_user(state: SimulationState, simulated_user: Runnable) -> AIMessage:
    runnable = simulated_user if isinstance(simulated_user, Runnable) else RunnableLambda(simulated_user)
    inputs = state.get("inputs") or {}
    inputs["messages"] = state["messages"]
    return runnable.invoke(inputs)


def _swap_roles(state: SimulationState) -> dict[str, Any]:
    new_messages: list[BaseMessage] = []
    for m in state["messages"]:
        if isinstance(m, AIMessage):
            new_messages.append(HumanMessage(content=m.content))
        else:
            new_messages.append(AIMessage(content=m.content))
    return {"inputs": state.get("inputs", {}), "messages": new_messages}


@as_runnable
def _fetch_messages(state: SimulationState) -> list[AnyMessage]:
    return state["messages"]


def _convert_to_human_message(message: BaseMessage) -> dict[str, Any]:
    return {"messages": [HumanMessage(content=message.content)]}


def _create_simulated_user_node(simulated_user: Runnable) -> Runnable:
    return (
        _swap_roles
        | RunnableLambda(_invoke_simulated_user).bind(simulated_user=simulated_user)
        | _convert_to_human_message
    )


def _coerce_to_message(assistant_output: str | BaseMessage) -> dict[str, Any]:
    if isinstance(assistant_output, str):
        return {"messages": [AIMessage(content=assistant_output)]}
    return {"messages": [assistant_output]}


def _should_continue(state: SimulationState, max_turns: int = 6) -> str:
    messages = state["messages"]
    if len(messages) > max_turns:
        return END
    if messages[-1].content.strip() == "FINISHED":
        return END
    return "assistant"
