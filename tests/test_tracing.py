from __future__ import annotations

import asyncio
import operator
from typing import Annotated, TypedDict

import pytest
import torch
from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

from langgraph_omar import ChatPolicy
from langgraph_omar.tracing import TraceRecorder
from langgraph_omar.trajectory import read_episodes, write_episodes


class Verdict(BaseModel):
    accept: bool


class State(TypedDict, total=False):
    topic: str
    log: Annotated[list[str], operator.add]
    rewards: dict[str, float]


def hand_written_graph(sync: bool = False):
    """Plain LangGraph, nothing from langgraph_omar but the chat model."""
    speaker = ChatPolicy(model="tiny", temperature=1.0, max_tokens=8)
    judge = ChatPolicy(model="tiny", temperature=1.0, max_tokens=8).with_structured_output(
        Verdict, include_raw=True
    )

    async def seller(state: State):
        reply = await speaker.ainvoke(f"Sell {state['topic']}")
        return {"log": [reply.content]}

    async def buyer(state: State):
        reply = await speaker.ainvoke(state["log"][-1])
        return {"log": [reply.content]}

    async def referee(state: State):
        verdict = await judge.ainvoke(" ".join(state["log"]))
        return {"log": [verdict["raw"].content], "rewards": {"seller": 1.0, "buyer": -1.0}}

    if sync:
        seller, buyer, referee = (lambda state, f=f: asyncio.run(f(state)) for f in (seller, buyer, referee))
    graph = StateGraph(State)
    graph.add_node("seller", seller, metadata={"role": "seller"})
    graph.add_node("buyer", buyer)
    graph.add_node("referee", referee)
    graph.add_edge(START, "seller")
    graph.add_edge("seller", "buyer")
    graph.add_edge("buyer", "referee")
    graph.add_edge("referee", END)
    return graph.compile()


async def test_abatch_of_8_episodes_exports_every_call_once_and_faithfully(policy, tmp_path):
    graph = hand_written_graph()
    inputs = [{"topic": f"item {i}", "log": []} for i in range(8)]
    with TraceRecorder() as rec:
        outputs = await graph.abatch(inputs)
    path = tmp_path / "traj.jsonl"
    assert rec.export(path) == 8
    assert len(path.read_text().splitlines()) == 8
    episodes = read_episodes(path)
    assert len({e.episode_id for e in episodes}) == 8
    for episode, output in zip(episodes, outputs, strict=True):
        assert [t.node for t in episode.turns] == ["seller", "buyer", "referee"]
        assert [t.role for t in episode.turns] == ["seller", "buyer", "referee"]  # metadata role, else node
        assert [t.text for t in episode.turns] == output["log"]  # each call exactly once, in this episode
        assert episode.rewards == {"seller": 1.0, "buyer": -1.0}
        for turn in episode.turns:
            decoded = policy.tokenizer.decode(turn.completion_ids, skip_special_tokens=True)
            assert decoded == turn.text  # no stop strings here, so no trimming
            ids = torch.tensor([turn.prompt_ids + turn.completion_ids])
            with torch.no_grad():
                logits = policy.model(ids).logits[0, len(turn.prompt_ids) - 1 : -1]
            expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(turn.completion_ids)[:, None])[
                :, 0
            ]
            assert torch.allclose(torch.tensor(turn.logprobs), expected, atol=1e-4)  # stated tolerance


def test_callback_in_config_sync_batch_and_episode_ids(policy):
    graph = hand_written_graph(sync=True)
    rec = TraceRecorder()
    configs = [
        {"callbacks": [rec], "metadata": {"episode_id": f"ep-{i}", "scenario_id": "s"}} for i in range(3)
    ]
    graph.batch([{"topic": "bike", "log": []}] * 3, configs)
    episodes = {e.episode_id: e for e in rec.trajectories()}
    assert set(episodes) == {"ep-0", "ep-1", "ep-2"}
    assert all(len(e.turns) == 3 and e.metadata["scenario_id"] == "s" for e in episodes.values())


def test_streaming_and_thread_id_grouping(policy):
    llm = ChatPolicy(model="tiny", temperature=0, max_tokens=6)

    def node(state: State):
        text = "".join(chunk.content for chunk in llm.stream("hello"))
        return {"log": [text]}

    graph = StateGraph(State)
    graph.add_node("talk", node)
    graph.add_edge(START, "talk")
    graph.add_edge("talk", END)
    compiled = graph.compile()
    with TraceRecorder() as rec:
        out = compiled.invoke({"log": []}, {"configurable": {"thread_id": "t-1"}})
    (episode,) = rec.trajectories()
    assert episode.episode_id == "t-1"
    assert [t.text for t in episode.turns] == out["log"]


def test_failed_episode_is_recorded(policy):
    def boom(state: State):
        ChatPolicy(model="tiny", max_tokens=3).invoke("hi")
        raise RuntimeError("scenario broke")

    graph = StateGraph(State)
    graph.add_node("boom", boom)
    graph.add_edge(START, "boom")
    compiled = graph.compile()
    with TraceRecorder() as rec, pytest.raises(RuntimeError):
        compiled.invoke({"log": []})
    (episode,) = rec.trajectories()
    assert episode.status == "failed" and "scenario broke" in episode.error
    assert len(episode.turns) == 1


def test_calls_inside_a_subgraph_are_recorded_in_the_parent_episode(policy):
    llm = ChatPolicy(model="tiny", temperature=0, max_tokens=4)

    def inner_talk(state: State):
        return {"log": [llm.invoke("inner").content]}

    inner = StateGraph(State)
    inner.add_node("inner_talk", inner_talk, metadata={"role": "advisor"})
    inner.add_edge(START, "inner_talk")
    subgraph = inner.compile()

    def outer_talk(state: State):
        return {"log": [llm.invoke("outer").content]}

    outer = StateGraph(State)
    outer.add_node("outer_talk", outer_talk)
    outer.add_node("advice", subgraph)
    outer.add_edge(START, "outer_talk")
    outer.add_edge("outer_talk", "advice")
    outer.add_edge("advice", END)
    with TraceRecorder() as rec:
        outer.compile().batch([{"log": []}, {"log": []}])
    episodes = rec.trajectories()
    assert len(episodes) == 2
    for episode in episodes:
        assert [(t.node, t.role) for t in episode.turns] == [
            ("outer_talk", "outer_talk"),
            ("inner_talk", "advisor"),
        ]


def test_a_hosted_model_and_the_policy_in_one_graph_are_both_recorded(policy, tmp_path):
    from hosted_roles import BUYER_LINES, mixed_graph
    from langchain_core.messages import SystemMessage

    from langgraph_omar.rollout import run_episodes

    graph = mixed_graph(rewards={"seller": 0.5, "buyer": 1.0})
    episodes, summary = run_episodes(
        graph, [{}, {}], [{"episode_id": "a"}, {"episode_id": "b"}], progress=False
    )
    assert "turns 8 (policy 4, model 4, human 0)" in summary.line()
    path = tmp_path / "traced.jsonl"
    write_episodes(path, episodes)
    for episode in read_episodes(path):
        assert [t.role for t in episode.turns] == ["seller", "buyer", "seller", "buyer"]
        seller, buyer = episode.turns[0], episode.turns[1]
        assert (seller.source, seller.model) == ("policy", "tiny")
        assert seller.completion_ids and len(seller.logprobs) == len(seller.completion_ids)
        assert seller.messages[0] == {"role": "system", "content": "You sell a bike."}
        assert (buyer.source, buyer.model) == ("model", "GenericFakeChatModel")
        assert buyer.text in BUYER_LINES
        assert (buyer.prompt_ids, buyer.completion_ids, buyer.logprobs) == ([], [], [])  # nothing invented
        assert buyer.messages[0] == {"role": "system", "content": "You buy the bike."}
        assert buyer.messages[1] == {"role": "user", "content": f"seller: {seller.text}"}
        assert episode.rewards == {"seller": 0.5, "buyer": 1.0}
    # the recorded messages are what ChatPolicy renders for the same chat (to_chat_dicts)
    from langgraph_omar.chat_model import to_chat_dicts

    assert to_chat_dicts([SystemMessage("You buy the bike.")]) == episodes[0].turns[1].messages[:1]


def test_a_persons_moves_through_interrupt_are_recorded_as_human_turns():
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import Command

    from langgraph_omar.conversation import Role, ScriptedChatModel, build_conversation_graph

    bot = ScriptedChatModel(respond=lambda messages: f"bot saw {len(messages) - 1}")
    person = Role("person", persona="You are the buyer.", human=True)
    graph = build_conversation_graph(
        [Role("bot", model=bot), person],
        max_turns=4,
        checkpointer=InMemorySaver(),
        reward_fn=lambda state: {"bot": 0.0, "person": 1.0},
    )
    config = {"configurable": {"thread_id": "chat-1"}}
    with TraceRecorder() as rec:
        graph.invoke({}, config)
        graph.invoke(Command(resume="Too expensive."), config)
        graph.invoke(Command(resume={"text": "Fine, deal."}), config)
    (episode,) = rec.trajectories()
    assert episode.episode_id == "chat-1"
    assert [(t.role, t.source, t.text) for t in episode.turns] == [
        ("bot", "model", "bot saw 0"),
        ("person", "human", "Too expensive."),
        ("bot", "model", "bot saw 2"),
        ("person", "human", "Fine, deal."),
    ]
    assert episode.turns[1].messages == [
        {"role": "system", "content": "You are the buyer."},
        {"role": "user", "content": "bot: bot saw 0"},
    ]
    assert episode.turns[1].model is None and not episode.turns[1].completion_ids
    assert episode.rewards == {"bot": 0.0, "person": 1.0}
    assert rec.source_counts() == {"policy": 0, "model": 2, "human": 2}


class GuardState(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    rewards: dict[str, float]
    agent_rewards: dict[str, float]


def test_agents_are_named_by_node_metadata_or_per_call_and_rewarded_by_agent_or_by_role():
    from langgraph_omar.conversation import ScriptedChatModel
    from langgraph_omar.conversation.calls import invoke_model

    model = ScriptedChatModel(respond=lambda messages: "ok")

    def post(state: GuardState):
        return {"log": [model.invoke("watch").text]}

    def crowd(state: GuardState, config):
        model.invoke("shout", {"metadata": {"agent": "Ada"}})  # a plain per-call config
        invoke_model(model, [HumanMessage("shout")], config, role="villager", agent="Bo")  # the action layer
        return {"log": ["crowd"]}

    def thief(state: GuardState):
        model.invoke("steal")
        outcome = {"thief": 0.0, "villager": 0.3}
        return {"rewards": outcome, "agent_rewards": {"guard_1": 1.0, "guard_2": 0.5, "Ada": 1.0}}

    graph = StateGraph(GuardState)
    graph.add_node("post_a", post, metadata={"role": "guard", "agent": "guard_1"})
    graph.add_node("post_b", post, metadata={"role": "guard", "agent": "guard_2"})
    graph.add_node("crowd", crowd, metadata={"role": "villager"})
    graph.add_node("thief", thief)
    for a, b in [
        (START, "post_a"),
        ("post_a", "post_b"),
        ("post_b", "crowd"),
        ("crowd", "thief"),
        ("thief", END),
    ]:
        graph.add_edge(a, b)
    with TraceRecorder() as rec:
        graph.compile().invoke({"log": []})
    (episode,) = rec.trajectories()
    assert [(t.node, t.role, t.agent) for t in episode.turns] == [
        ("post_a", "guard", "guard_1"),
        ("post_b", "guard", "guard_2"),
        ("crowd", "villager", "Ada"),
        ("crowd", "villager", "Bo"),
        ("thief", "thief", "thief"),  # no agent named: the agent is the role
    ]
    assert episode.agent_rewards == {"guard_1": 1.0, "guard_2": 0.5, "Ada": 1.0}
    # a role its final state does not reward gets its agents' mean: what evaluation seats and baselines read
    assert episode.rewards == {"thief": 0.0, "villager": 0.3, "guard": 0.75}
    assert [episode.reward_of(t) for t in episode.turns] == [1.0, 0.5, 1.0, 0.3, 0.0]


def test_a_role_reward_is_derived_only_when_every_agent_of_the_role_has_one():
    from langgraph_omar.conversation import ScriptedChatModel

    model = ScriptedChatModel(respond=lambda messages: "ok")

    def post(state: GuardState):
        model.invoke("watch")
        return {"agent_rewards": {"guard_1": 1.0}}  # guard_2 gets none

    graph = StateGraph(GuardState)
    graph.add_node("post_a", post, metadata={"role": "guard", "agent": "guard_1"})
    graph.add_node("post_b", post, metadata={"role": "guard", "agent": "guard_2"})
    graph.add_edge(START, "post_a")
    graph.add_edge("post_a", "post_b")
    graph.add_edge("post_b", END)
    with TraceRecorder() as rec:
        graph.compile().invoke({"log": []})
    (episode,) = rec.trajectories()
    assert episode.rewards == {}  # guard_2 does not inherit guard_1's reward through a derived role reward
    assert [episode.reward_of(t) for t in episode.turns] == [1.0, None]
