"""A person takes a role through `interrupt`, and the conversation goes on after `Command(resume=...)`."""

from __future__ import annotations

import operator
from typing import Annotated, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from langgraph_omar.conversation import (
    ChoiceAction,
    ConversationState,
    Role,
    ScriptedChatModel,
    Utterance,
    arole_node,
    build_conversation_graph,
    role_node,
)


def counting(name: str) -> ScriptedChatModel:
    return ScriptedChatModel(respond=lambda messages: f"{name} saw {len(messages) - 1}")


def conversation_with_a_person() -> tuple[CompiledStateGraph, ScriptedChatModel]:
    bot = counting("bot")
    person = Role("person", persona="You are the buyer.", goal="Pay little.", human=True)
    graph = build_conversation_graph(
        [Role("bot", model=bot), person], max_turns=4, checkpointer=InMemorySaver()
    )
    return graph, bot


def test_a_person_plays_a_role_and_the_transcript_continues() -> None:
    graph, bot = conversation_with_a_person()
    config: RunnableConfig = {"configurable": {"thread_id": "t1"}}
    paused = graph.invoke({}, config)
    (question,) = paused["__interrupt__"]
    # The person is shown exactly what a model in that seat would see.
    assert question.value["role"] == "person" and question.value["turn"] == 1
    assert question.value["messages"] == [
        {"role": "system", "name": None, "content": "You are the buyer.\n\nYour goal: Pay little."},
        {"role": "user", "name": "bot", "content": "bot saw 0"},
    ]
    paused = graph.invoke(Command(resume="Too expensive."), config)
    final = graph.invoke(Command(resume={"text": "Fine, deal."}), config)
    assert [(u["speaker"], u["text"]) for u in final["transcript"]] == [
        ("bot", "bot saw 0"),
        ("person", "Too expensive."),
        ("bot", "bot saw 2"),  # the bot saw the person's move
        ("person", "Fine, deal."),
    ]
    assert final["stop_reason"] == "max_turns"
    assert len(bot.calls) == 2  # resuming replays no model call


async def test_a_person_plays_a_role_under_ainvoke() -> None:
    graph, bot = conversation_with_a_person()
    config: RunnableConfig = {"configurable": {"thread_id": "t2"}}
    await graph.ainvoke({}, config)
    await graph.ainvoke(Command(resume="a"), config)
    final = await graph.ainvoke(Command(resume="b"), config)
    assert [u["text"] for u in final["transcript"]] == ["bot saw 0", "a", "bot saw 2", "b"]
    assert bot.async_calls == 2


def test_a_persons_illegal_vote_gets_the_recorded_fallback() -> None:
    voter = Role("person", human=True, action_format=ChoiceAction("vote", ["bot"]))
    graph = build_conversation_graph(
        [voter, Role("bot", model=counting("bot"))], max_turns=1, checkpointer=InMemorySaver()
    )
    config: RunnableConfig = {"configurable": {"thread_id": "t3"}}
    paused = graph.invoke({}, config)
    assert "`vote NAME`" in paused["__interrupt__"][0].value["messages"][0]["content"]
    final = graph.invoke(Command(resume="vote nobody"), config)
    assert final["transcript"][0]["action"] == {"type": "abstain"}
    assert final["fallbacks"][0]["role"] == "person" and final["fallbacks"][0]["raw"] == "vote nobody"


def test_a_resume_value_of_the_wrong_type_is_a_clear_error() -> None:
    graph, _ = conversation_with_a_person()
    config: RunnableConfig = {"configurable": {"thread_id": "t4"}}
    graph.invoke({}, config)
    with pytest.raises(ValueError, match="resume value must be a str"):
        graph.invoke(Command(resume=42), config)


class DebateState(ConversationState, total=False):
    judge_notes: Annotated[list[str], operator.add]


def test_role_nodes_in_a_hand_written_graph() -> None:
    # Plain LangGraph: two role nodes in sequence, one of them played by a person, plus a node of the
    # user's own that reads the transcript.
    def judge(state: DebateState) -> dict[str, list[str]]:
        transcript: list[Utterance] = state["transcript"]
        return {"judge_notes": [f"{len(transcript)} moves, last by {transcript[-1]['speaker']}"]}

    pro = Role("pro", model=counting("pro"))
    con = Role("con", human=True)
    builder = StateGraph(DebateState)
    builder.add_node("pro", role_node(pro), metadata={"role": "pro"})
    builder.add_node("con", role_node(con), metadata={"role": "con"})
    builder.add_node("judge", judge)
    builder.add_edge(START, "pro")
    builder.add_edge("pro", "con")
    builder.add_edge("con", "judge")
    builder.add_edge("judge", END)
    graph = builder.compile(checkpointer=InMemorySaver())
    config: RunnableConfig = {"configurable": {"thread_id": "hand"}}
    graph.invoke({}, config)
    final = graph.invoke(Command(resume="I disagree."), config)
    # Without a router, turns count the utterances before the move: 0, then 1.
    assert [(u["speaker"], u["text"], u["turn"]) for u in final["transcript"]] == [
        ("pro", "pro saw 0", 0),
        ("con", "I disagree.", 1),
    ]
    assert final["judge_notes"] == ["2 moves, last by con"]


async def test_async_role_nodes_in_a_hand_written_graph() -> None:
    class State(TypedDict, total=False):
        transcript: Annotated[list[Utterance], operator.add]

    alice_model, bob_model = counting("alice"), counting("bob")
    builder = StateGraph(State)
    builder.add_node("alice", arole_node(Role("alice", model=alice_model)), metadata={"role": "alice"})
    builder.add_node("bob", arole_node(Role("bob", model=bob_model)), metadata={"role": "bob"})
    builder.add_edge(START, "alice")
    builder.add_edge("alice", "bob")
    builder.add_edge("bob", END)
    final = await builder.compile().ainvoke({})
    assert [u["text"] for u in final["transcript"]] == ["alice saw 0", "bob saw 1"]
    assert (alice_model.async_calls, bob_model.async_calls) == (1, 1)
    assert bob_model.call_metadata[0]["role"] == "bob"
