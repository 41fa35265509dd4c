"""A plain LangGraph graph whose nodes are prebuilt `create_react_agent` agents: a buyer and a seller. The
lines a user adds: `sample_input`, the `score` node and `build(model)`. No role metadata: each turn's role is
the name of the node holding its agent."""

from __future__ import annotations

import warnings
from typing import Any

from langgraph.graph import END, START, MessagesState, StateGraph

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # create_react_agent's move to langchain.agents
    from langgraph.prebuilt import create_react_agent

ITEMS = ["a bike", "a lamp", "a kettle"]


class State(MessagesState, total=False):
    rewards: dict[str, float]


def sample_input(seed: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"Trade {ITEMS[seed % 3]}."}]}


def score(state: State) -> dict[str, Any]:
    buyer, seller = (m.text for m in state["messages"][1:3])
    return {"rewards": {"buyer": -len(buyer) / 10, "seller": len(seller) / 10}}


def build(model: Any) -> Any:
    graph = StateGraph(State)
    graph.add_node("buyer", create_react_agent(model, tools=[], prompt="You buy; offer a low price."))
    graph.add_node("seller", create_react_agent(model, tools=[], prompt="You sell; ask a high price."))
    graph.add_node("score", score)
    graph.add_edge(START, "buyer")
    graph.add_edge("buyer", "seller")
    graph.add_edge("seller", "score")
    graph.add_edge("score", END)
    return graph.compile()
