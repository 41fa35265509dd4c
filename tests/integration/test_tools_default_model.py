"""Tool calls and structured output on the real default model (SmolLM2-135M): a plain LangGraph tool loop with a
forced tool over 8 concurrent episodes, every call recorded; structured output with ints, enums, floats,
booleans and lists valid on every call; 100 structured calls at a 96-token cap all valid (the grammar closes
the ones that run long), their log-probabilities the unmasked ones; the SOTOPIA judge's JSON mode parsing on
every call."""

from __future__ import annotations

import enum
import json
from uuid import UUID

import pytest
import torch
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from pydantic import BaseModel, Field

from langgraph_omar import ChatPolicy
from langgraph_omar.envs.sotopia.judge import SotopiaJudge
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.serving.records import token_records
from langgraph_omar.tracing import TraceRecorder

pytestmark = pytest.mark.integration

RUNS: list[dict] = []


@tool
def lookup_price(item: str, quantity: int) -> str:
    """Look up the price of `quantity` units of an item in the shop."""
    RUNS.append({"item": item, "quantity": quantity})
    return f"{quantity} x {item} cost {3 * quantity} dollars"


def tool_loop():
    """bind_tools (forced) -> ToolNode -> the model again, which answers from the tool's result."""
    # The call's JSON, its item name capped at 100 characters (`bound_schema`), fits in 160 tokens even at one
    # token per character. Typical calls take 25-60 tokens; at a 96-token cap one call in a suite run of 8 ran
    # out of tokens and came back as an invalid tool call.
    caller = ChatPolicy(temperature=0.7, max_tokens=160).bind_tools(
        [lookup_price], tool_choice="lookup_price"
    )
    answerer = ChatPolicy(temperature=0.7, max_tokens=8)

    def agent(state: MessagesState):
        return {"messages": [caller.invoke(state["messages"])]}

    def answer(state: MessagesState):
        return {"messages": [answerer.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent, metadata={"role": "shopper"})
    graph.add_node("tools", ToolNode([lookup_price]))
    graph.add_node("answer", answer, metadata={"role": "shopper"})
    graph.add_edge(START, "agent")
    graph.add_edge("agent", "tools")
    graph.add_edge("tools", "answer")
    graph.add_edge("answer", END)
    return graph.compile()


async def test_a_forced_tool_loop_over_8_concurrent_episodes_calls_validly_runs_and_records():
    RUNS.clear()
    questions = ["apples", "bread", "milk", "eggs", "rice", "tea", "soap", "pens"]
    inputs = [{"messages": [HumanMessage(f"How much do 3 {q} cost?")]} for q in questions]
    with TraceRecorder() as recorder:
        outputs = await tool_loop().abatch(inputs, {"max_concurrency": 8})
    for output in outputs:
        assert len(output["messages"]) == 4, output["messages"]
        call_message, result, final = output["messages"][1:]
        assert isinstance(call_message, AIMessage) and not call_message.invalid_tool_calls
        (call,) = call_message.tool_calls
        assert call["name"] == "lookup_price" and set(call["args"]) == {"item", "quantity"}
        assert isinstance(call["args"]["item"], str) and isinstance(call["args"]["quantity"], int)
        assert (
            isinstance(result, ToolMessage) and result.tool_call_id == call["id"] and result.status != "error"
        )
        assert isinstance(final, AIMessage)
    assert len(RUNS) == 8  # the tool ran once per episode
    episodes = recorder.trajectories()
    assert len(episodes) == 8 and all(len(e.turns) == 2 for e in episodes)  # every model call recorded
    for episode in episodes:
        call_turn = episode.turns[0]
        assert json.loads(call_turn.text)["name"] == "lookup_price"
        assert len(call_turn.logprobs) == len(call_turn.completion_ids) > 0


class Size(enum.StrEnum):
    small = "small"
    large = "large"


class Order(BaseModel):
    quantity: int
    size: Size
    price: float = Field(ge=0, le=100)
    gift: bool
    extras: list[Size] = Field(max_length=3)


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output_with_ints_enums_floats_booleans_and_lists_is_valid_on_every_call(method):
    structured = ChatPolicy(temperature=0.7, max_tokens=64).with_structured_output(Order, method=method)
    prompts = [
        f"Order {n} coffees, {size}, as a gift." for n, size in ((2, "small"), (5, "large"), (1, "large"))
    ]
    results = structured.batch(prompts)
    assert all(isinstance(r, Order) for r in results)


class Greeting(BaseModel):
    name: str
    message: str


class RunIds(BaseCallbackHandler):
    def __init__(self) -> None:
        self.ids: list[UUID] = []

    def on_chat_model_start(self, serialized, messages, *, run_id, **kwargs):
        self.ids.append(run_id)


async def test_100_structured_calls_at_a_96_token_cap_all_return_a_valid_object():
    # Measured before the grammar closed near the cap: 1 of these 100 calls ran its name string to max_tokens
    # and did not parse ({"name": "Shelter<n>D<n>L<n>M...). Seeded: every call samples the same tokens each run.
    llm = ChatPolicy(temperature=0.7, max_tokens=96, seed=0)
    prompts = [
        f"Greet guest number {i} at the hotel, with their name and a warm welcome message."
        for i in range(100)
    ]
    handler = RunIds()
    outputs = await llm.with_structured_output(Greeting, include_raw=True).abatch(
        prompts, {"callbacks": [handler], "max_concurrency": 100}
    )
    assert all(o["parsing_error"] is None and isinstance(o["parsed"], Greeting) for o in outputs), [
        o["raw"].content for o in outputs if o["parsing_error"] is not None
    ]
    closed = [o["raw"] for o in outputs if o["raw"].response_metadata.get("closed_early")]
    assert closed and all(m.usage_metadata["output_tokens"] <= 96 for m in closed)
    # the recorded log-probabilities of the calls closed early are the unmasked ones, forced tokens included
    # (a bf16 engine's incremental decode and this whole-sequence recompute differ by ~0.1-0.2, and by a few
    # percent deep in the tail: a forced token at -26 nats came back 0.7 apart; a forced token's masked
    # log-probability is 0 where its unmasked one is far below)
    records = [
        r for r in map(token_records.pop, handler.ids) if r is not None and r.extra.get("closed_early")
    ]
    assert len(records) == len(closed)
    engine = SharedPolicy.get()
    for record in records:
        ids = torch.tensor([record.prompt_ids + record.completion_ids], device=engine.device)
        with torch.no_grad():
            logits = engine.model(ids).logits[0, len(record.prompt_ids) - 1 : -1].float()
        completion = ids[0, len(record.prompt_ids) :, None]
        unmasked = torch.log_softmax(logits / 0.7, -1).gather(-1, completion)[:, 0]
        assert torch.allclose(torch.tensor(record.logprobs), unmasked.cpu(), atol=0.5, rtol=0.05)
        masked = torch.tensor(record.extra["masked_logprobs"])
        assert ((masked - unmasked.cpu()) > 2).any()


def test_the_sotopia_judge_json_mode_parses_on_every_call():
    judge = SotopiaJudge(ChatPolicy(temperature=0.7), retries=0, max_tokens=64)
    transcript = 'Turn #1: Ann said: "Would you sell the bike for 80?"\nTurn #2: Bob said: "Make it 90 and it is yours."'
    results = judge.score_agents("Ann buys a bike from Bob.", transcript, ["Ann", "Bob", "Ann", "Bob"])
    assert all(r.ok and r.attempts == 1 for r in results), [r.failure for r in results]
