"""langgraph-swarm's customer-support example, adapted to the minimal contract: a flight assistant and a hotel
assistant built with langchain's `create_agent`, joined by `create_swarm`, handing the customer over with
handoff tools. The lines a user adds: `sample_input`, `sample_config`, the `score` node writing `rewards`, and
`build(model)` instead of a module-level model. No role metadata: each turn's role is its agent's name."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from langchain.agents import create_agent
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph_swarm import SwarmState, create_handoff_tool, create_swarm

RESERVATIONS: dict[str, dict[str, Any]] = defaultdict(lambda: {"flight": None, "hotel": None})
REQUESTS = ["a flight from BOS to JFK tomorrow", "a room at the McKittrick Hotel"]


@tool
def book_flight(flight_id: str, config: RunnableConfig) -> str:
    """Book a flight."""
    RESERVATIONS[config["configurable"]["thread_id"]]["flight"] = flight_id
    return "booked"


@tool
def book_hotel(hotel_id: str, config: RunnableConfig) -> str:
    """Book a hotel."""
    RESERVATIONS[config["configurable"]["thread_id"]]["hotel"] = hotel_id
    return "booked"


class State(SwarmState, total=False):
    rewards: dict[str, float]


def sample_input(seed: int) -> dict[str, Any]:
    agent = ["flight_assistant", "hotel_assistant"][seed % 2]
    return {"messages": [{"role": "user", "content": REQUESTS[seed % 2]}], "active_agent": agent}


def sample_config(seed: int) -> dict[str, Any]:
    return {"user_id": f"customer-{seed}"}


def score(state: State) -> dict[str, Any]:
    """Each assistant's reward: the share of capitals in what it said (a stand-in for a booking's success)."""
    said: dict[str, str] = {"flight_assistant": "", "hotel_assistant": ""}
    for message in state["messages"]:
        if message.type == "ai" and message.name in said:
            said[message.name] += message.text
    return {"rewards": {n: sum(c.isupper() for c in t) / max(len(t), 1) for n, t in said.items()}}


def build(model: Any) -> Any:
    flight = create_agent(
        model,
        tools=[book_flight, create_handoff_tool(agent_name="hotel_assistant")],
        system_prompt="You are a flight booking assistant",
        name="flight_assistant",
    )
    hotel = create_agent(
        model,
        tools=[book_hotel, create_handoff_tool(agent_name="flight_assistant")],
        system_prompt="You are a hotel booking assistant",
        name="hotel_assistant",
    )
    swarm = create_swarm([flight, hotel], default_active_agent="flight_assistant").compile()
    graph = StateGraph(State)
    graph.add_node("support", swarm)
    graph.add_node("score", score)
    graph.add_edge(START, "support")
    graph.add_edge("support", "score")
    graph.add_edge("score", END)
    return graph.compile()
