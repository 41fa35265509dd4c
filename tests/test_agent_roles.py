"""Prebuilt agents (langchain's `create_agent`, LangGraph's `create_react_agent`), swarms and supervisors are
recorded under their agents' names, with no role metadata added to the app (hosted fake models drive the
handoffs; the real upstream packages build the graphs)."""

from __future__ import annotations

import itertools
import warnings

import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph_supervisor import create_supervisor
from langgraph_swarm import create_handoff_tool, create_swarm

from langgraph_omar.tracing import TraceRecorder
from langgraph_omar.trajectory import role_of

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # create_react_agent's move to langchain.agents
    from langgraph.prebuilt import create_react_agent


class ToolFake(GenericFakeChatModel):
    """A hosted chat model's stand-in that accepts tools (its replies are scripted)."""

    def bind_tools(self, tools, **kwargs):  # type: ignore[no-untyped-def]
        return self


def scripted(*replies: AIMessage) -> ToolFake:
    return ToolFake(messages=itertools.cycle(replies))


def handoff(to: str) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": f"transfer_to_{to}", "args": {}, "id": f"call-{to}"}])


@pytest.mark.parametrize(
    ("metadata", "role"),
    [
        ({"langgraph_node": "buyer", "langgraph_checkpoint_ns": "buyer:1"}, "buyer"),
        (
            {"langgraph_node": "model", "lc_agent_name": "flight", "langgraph_checkpoint_ns": "x:1|model:2"},
            "flight",
        ),
        (
            {"langgraph_node": "agent", "langgraph_checkpoint_ns": "team:1|math_expert:2|agent:3"},
            "math_expert",
        ),
        ({"role": "seller", "lc_agent_name": "flight", "langgraph_checkpoint_ns": "a:1|model:2"}, "seller"),
        ({}, "model"),
    ],
)
def test_role_of_a_call_is_explicit_then_agent_then_enclosing_node_then_node(metadata, role):
    assert role_of(metadata) == role


def test_a_swarm_of_create_agent_agents_is_recorded_by_agent_name():
    flight = create_agent(
        scripted(handoff("hotel"), AIMessage("booked a flight")),
        tools=[create_handoff_tool(agent_name="hotel")],
        name="flight",
        system_prompt="You book flights.",
    )
    hotel = create_agent(
        scripted(AIMessage("booked a hotel")),
        tools=[create_handoff_tool(agent_name="flight")],
        name="hotel",
        system_prompt="You book hotels.",
    )
    swarm = create_swarm([flight, hotel], default_active_agent="flight").compile()
    with TraceRecorder() as rec:
        swarm.invoke({"messages": [("user", "a flight and a hotel, please")]})
    (episode,) = rec.trajectories()
    assert [(t.role, t.node) for t in episode.turns] == [("flight", "model"), ("hotel", "model")]


def test_a_supervisor_and_its_react_agent_workers_are_recorded_by_name():
    math = create_react_agent(scripted(AIMessage("4")), tools=[], name="math_expert")
    research = create_react_agent(scripted(AIMessage("Paris")), tools=[], name="research_expert")
    supervisor = create_supervisor(
        [math, research],
        model=scripted(handoff("math_expert"), handoff("research_expert"), AIMessage("done")),
    ).compile()
    with TraceRecorder() as rec:
        supervisor.invoke({"messages": [("user", "2+2, and the capital of France?")]})
    (episode,) = rec.trajectories()
    assert [t.role for t in episode.turns] == [
        "supervisor",
        "math_expert",
        "supervisor",
        "research_expert",
        "supervisor",
    ]


def test_react_agents_as_nodes_of_a_plain_graph_take_the_nodes_names_and_explicit_metadata_wins():
    graph = StateGraph(MessagesState)
    graph.add_node("buyer", create_react_agent(scripted(AIMessage("100?")), tools=[]))
    graph.add_node("seller", create_react_agent(scripted(AIMessage("120.")), tools=[]))
    graph.add_node(
        "judge",
        create_agent(scripted(AIMessage("fair")), tools=[], name="referee"),
        metadata={"role": "arbiter"},
    )
    graph.add_edge(START, "buyer")
    graph.add_edge("buyer", "seller")
    graph.add_edge("seller", "judge")
    graph.add_edge("judge", END)
    with TraceRecorder() as rec:
        graph.compile().invoke({"messages": [("user", "a bike")]})
    (episode,) = rec.trajectories()
    assert [t.role for t in episode.turns] == ["buyer", "seller", "arbiter"]
