"""langgraph-supervisor's research team, adapted to the minimal contract: two `create_react_agent` workers
under `create_supervisor`. The supervisor routes on a hosted model (here a deterministic stand-in) and the
workers are the trained model; the lines a user adds: `sample_input`, `ROLES`, the `score` node and
`build(model)`. No role metadata: the workers' turns are recorded as `math_expert` and `research_expert`."""

from __future__ import annotations

import warnings
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph_supervisor import create_supervisor

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # create_react_agent's move to langchain.agents
    from langgraph.prebuilt import create_react_agent

WORKERS = ("math_expert", "research_expert")
ROLES = WORKERS  # the supervisor is a hosted model: it is not trained, not a seat
QUESTIONS = ["what is 3 + 4?", "who wrote Hamlet?"]


class Router(BaseChatModel):
    """The supervisor's hosted model: hands the question over to the worker it names, then finishes."""

    @property
    def _llm_type(self) -> str:
        return "router"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> ChatResult:
        if any(m.type == "ai" and m.name in WORKERS for m in messages):
            reply = AIMessage("done")
        else:
            worker = WORKERS[0] if "+" in messages[-1].text else WORKERS[1]
            reply = AIMessage("", tool_calls=[{"name": f"transfer_to_{worker}", "args": {}, "id": worker}])
        return ChatResult(generations=[ChatGeneration(message=reply)])


class State(MessagesState, total=False):
    rewards: dict[str, float]


def sample_input(seed: int) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": QUESTIONS[seed % 2]}]}


def score(state: State) -> dict[str, Any]:
    said = dict.fromkeys(WORKERS, "")
    for message in state["messages"]:
        if message.type == "ai" and message.name in said:
            said[message.name] += message.text
    return {"rewards": {n: sum(c.isupper() for c in t) / max(len(t), 1) for n, t in said.items()}}


def build(model: Any) -> Any:
    math = create_react_agent(model, tools=[], name="math_expert", prompt="You are a math expert.")
    research = create_react_agent(model, tools=[], name="research_expert", prompt="You are a researcher.")
    team = create_supervisor([math, research], model=Router(), prompt="You manage two experts.").compile()
    graph = StateGraph(State)
    graph.add_node("team", team)
    graph.add_node("score", score)
    graph.add_edge(START, "team")
    graph.add_edge("team", "score")
    graph.add_edge("score", END)
    return graph.compile()
