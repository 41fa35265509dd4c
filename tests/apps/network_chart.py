"""LangGraph's "multi-agent network" tutorial (multi-agent-collaboration), adapted to the minimal contract: a
researcher and a chart generator, each a `create_react_agent` agent invoked from a sync node function, handing
the work to each other with `Command(goto=...)` until one answers "FINAL ANSWER". The lines a user changes:
`build(model)` instead of a module-level `llm`, a turn cap in `get_next_node` (the tutorial's
`recursion_limit=150` ends a run with an error, not with an outcome), `sample_input`, and the team as a node
beside a `score` node. The tutorial's Tavily search and Python REPL are replaced by offline stand-ins (test
fixtures, not part of the adaptation). No role metadata: the turns are recorded as `researcher` and
`chart_generator`, the nodes holding the agents."""

from __future__ import annotations

import re
import warnings
from typing import Annotated, Any, Literal

from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # create_react_agent's move to langchain.agents
    from langgraph.prebuilt import create_react_agent

GDP = {"the UK": [2.76, 3.13, 3.09, 3.38, 3.64], "France": [2.64, 2.96, 2.78, 3.03, 3.16]}
MAX_MESSAGES = 8  # the turn cap the adaptation adds: a run must end in an outcome


@tool
def search(query: str) -> str:
    """Search the web for figures (an offline stand-in for the tutorial's TavilySearch)."""
    country = next((c for c in GDP if c.split()[-1].lower() in query.lower()), "the UK")
    return f"{country} GDP 2020-2024, trillion USD: {GDP[country]}"


@tool
def python_repl_tool(code: Annotated[str, "The python code to execute to generate your chart."]) -> str:
    """Use this to execute python code that draws the chart (a stand-in: it records the code, runs nothing)."""
    return f"Successfully executed:\n```python\n{code}\n```\nIf you have completed all tasks, respond with FINAL ANSWER."


def make_system_prompt(suffix: str) -> str:
    return (
        "You are a helpful AI assistant, collaborating with other assistants."
        " Use the provided tools to progress towards answering the question."
        " If you or any of the other assistants have the final answer or deliverable,"
        " prefix your response with FINAL ANSWER so the team knows to stop."
        f"\n{suffix}"
    )


def get_next_node(messages: list[BaseMessage], goto: str) -> str:
    if "FINAL ANSWER" in messages[-1].content or len(messages) >= MAX_MESSAGES:
        return END
    return goto


class State(MessagesState, total=False):
    rewards: dict[str, float]


def sample_input(seed: int) -> dict[str, Any]:
    country = list(GDP)[seed % len(GDP)]
    task = f"First, get {country}'s GDP over the past 5 years, then make a line chart of it. Then finish."
    return {"messages": [("user", task)]}


def score(state: State) -> dict[str, Any]:
    """The team's reward, shared by both agents: the share of the right figures in the conversation, plus one
    for a final answer, plus a tenth of the share of digits in what they said (a shaping term: figures)."""
    country = next(c for c in GDP if c in state["messages"][0].text)
    said = " ".join(m.text for m in state["messages"][1:])
    found = sum(str(v) in re.findall(r"\d+\.\d+", said) for v in GDP[country]) / len(GDP[country])
    digits = sum(c.isdigit() for c in said) / max(len(said), 1)
    reward = found + ("FINAL ANSWER" in said) + digits / 10
    return {"rewards": {"researcher": reward, "chart_generator": reward}}


def build(model: Any) -> Any:
    research_agent = create_react_agent(
        model,
        tools=[search],
        prompt=make_system_prompt(
            "You can only do research. You are working with a chart generator colleague."
        ),
    )

    def research_node(state: MessagesState) -> Command[Literal["chart_generator", END]]:
        result = research_agent.invoke(state)
        goto = get_next_node(result["messages"], "chart_generator")
        result["messages"][-1] = HumanMessage(content=result["messages"][-1].content, name="researcher")
        return Command(update={"messages": result["messages"]}, goto=goto)

    chart_agent = create_react_agent(
        model,
        [python_repl_tool],
        prompt=make_system_prompt(
            "You can only generate charts. You are working with a researcher colleague."
        ),
    )

    def chart_node(state: MessagesState) -> Command[Literal["researcher", END]]:
        result = chart_agent.invoke(state)
        goto = get_next_node(result["messages"], "researcher")
        result["messages"][-1] = HumanMessage(content=result["messages"][-1].content, name="chart_generator")
        return Command(update={"messages": result["messages"]}, goto=goto)

    workflow = StateGraph(MessagesState)
    workflow.add_node("researcher", research_node)
    workflow.add_node("chart_generator", chart_node)
    workflow.add_edge(START, "researcher")
    team = workflow.compile()

    graph = StateGraph(State)
    graph.add_node("team", team)
    graph.add_node("score", score)
    graph.add_edge(START, "team")
    graph.add_edge("team", "score")
    graph.add_edge("score", END)
    return graph.compile()
