"""Observations: what each role sees, and that nothing it may not see reaches its model."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from langgraph_omar.conversation import (
    ChoiceAction,
    Role,
    ScriptedChatModel,
    build_conversation_graph,
    make_utterance,
    observe,
)


def echo_model() -> ScriptedChatModel:
    """Replies with everything it was shown, so whatever it saw ends up in the transcript too."""
    return ScriptedChatModel(respond=lambda messages: " | ".join(m.text for m in messages))


def all_text(calls: list[list[BaseMessage]]) -> str:
    return "\n".join(m.text for call in calls for m in call)


def test_observe_orders_system_own_and_others_messages() -> None:
    alice = Role(
        "alice", persona="You are Alice.", goal="Sell high.", private_info=["Floor: 80"], model=echo_model()
    )
    state = {
        "transcript": [
            make_utterance("bob", "Hi Alice", turn=0),
            make_utterance("alice", "Hi Bob", turn=1),
            make_utterance("carol", "psst bob", turn=1, visible_to=["bob"]),  # not for alice
            make_utterance("narrator", "A bell rings.", turn=1),
        ]
    }
    messages = observe(state, alice)
    assert [type(m) for m in messages] == [SystemMessage, HumanMessage, AIMessage, HumanMessage]
    assert messages[0].text == "You are Alice.\n\nYour goal: Sell high.\n\nWhat only you know:\n- Floor: 80"
    assert (messages[1].text, messages[1].name) == ("Hi Alice", "bob")
    assert messages[2].text == "Hi Bob"
    assert (messages[3].text, messages[3].name) == ("A bell rings.", "narrator")


def test_private_channel_reaches_its_audience_and_the_speaker() -> None:
    carol = Role("carol", model=echo_model())
    bob = Role("bob", model=echo_model())
    state = {"transcript": [make_utterance("carol", "psst bob", turn=0, visible_to=["bob"])]}
    assert [m.text for m in observe(state, bob)][1:] == ["psst bob"]
    assert [m.text for m in observe(state, carol)][1:] == ["psst bob"]


def test_scenario_overrides_brief_and_adds_description_and_instructions() -> None:
    voter = Role(
        "alice",
        persona="static persona",
        goal="static goal",
        model=echo_model(),
        action_format=ChoiceAction("vote", ["bob", "carol"]),
        turn_prompt="Your turn.",
    )
    state = {
        "scenario": {
            "description": "A village at night.",
            "roles": {"alice": {"goal": "Find the wolf.", "private_info": "Bob is a wolf."}},
        }
    }
    messages = observe(state, voter)
    system = messages[0].text
    assert system.startswith("static persona\n\nScenario: A village at night.\n\nYour goal: Find the wolf.")
    assert "static goal" not in system and "- Bob is a wolf." in system
    assert "`vote NAME`" in system and "bob, carol" in system
    assert isinstance(messages[-1], HumanMessage) and messages[-1].text == "Your turn."


def test_a_turn_prompt_can_be_a_function_of_the_state() -> None:
    def prompt(state: dict) -> str | None:
        return f"{len(state.get('transcript') or [])} moves so far." if state.get("transcript") else None

    role = Role("alice", model=echo_model(), turn_prompt=prompt)
    assert observe({}, role)[-1].type == "system"  # None: no last message
    state = {"transcript": [make_utterance("bob", "hi", turn=0)]}
    assert observe(state, role)[-1].text == "1 moves so far."


@pytest.mark.parametrize(
    ("scenario", "message"),
    [
        ("not a mapping", "scenario"),
        ({"roles": {"alice": {"mood": "happy"}}}, "unknown keys"),
        ({"roles": {"alice": {"goal": 3}}}, "goal"),
        ({"roles": {"alice": {"private_info": [1]}}}, "private_info"),
        ({"roles": ["alice"]}, "scenario.roles"),
    ],
)
def test_bad_scenario_fields_are_clear_errors(scenario: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        observe({"scenario": scenario}, Role("alice", model=echo_model()))


def test_secrets_never_reach_another_roles_model() -> None:
    # Every secret is a unique string; each model records all it is shown and answers with a marker of its
    # own (bob's answers are whispers to carol). What each model may see is listed; anything else is a leak.
    def replying(marker: str) -> ScriptedChatModel:
        return ScriptedChatModel(respond=lambda messages: f"{marker} (I saw {len(messages)} messages)")

    models = {"alice": replying("PUBLIC-A"), "bob": replying("WHISPER-B"), "carol": replying("PUBLIC-C")}
    roles = [
        Role("alice", private_info="SECRET-A", goal="GOAL-A", model=models["alice"]),
        Role("bob", private_info=["SECRET-B"], model=models["bob"], audience=["carol"]),
        Role("carol", private_info="SECRET-C", model=models["carol"]),
    ]
    graph = build_conversation_graph(roles, max_turns=6)
    final = graph.invoke({"scenario": {"roles": {"carol": {"goal": "GOAL-C"}}}})
    assert [u["speaker"] for u in final["transcript"]] == ["alice", "bob", "carol"] * 2
    markers = {"SECRET-A", "GOAL-A", "PUBLIC-A", "SECRET-B", "WHISPER-B", "SECRET-C", "GOAL-C", "PUBLIC-C"}
    allowed = {
        "alice": {"SECRET-A", "GOAL-A", "PUBLIC-A", "PUBLIC-C"},
        "bob": {"SECRET-B", "WHISPER-B", "PUBLIC-A", "PUBLIC-C"},
        "carol": {"SECRET-C", "GOAL-C", "PUBLIC-C", "PUBLIC-A", "WHISPER-B"},
    }
    for name, model in models.items():
        seen = {marker for marker in markers if marker in all_text(model.calls)}
        assert seen == allowed[name], name
