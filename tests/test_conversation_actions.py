"""Action formats: FreeText, ChoiceAction, their fallbacks, and parsers that never raise."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langgraph_omar.conversation import ActionContext, ChoiceAction, FreeText, find_choice

PLAYERS = ["alice", "bob", "bobby", "carol"]


def context(role: str = "alice", turn: int = 3, **state: object) -> ActionContext:
    return ActionContext(role=role, turn=turn, state=state)


def test_free_text_speak_silence_and_leave() -> None:
    free = FreeText(leave_marker="[leave]")
    assert free.parse("Hello there", context()).action == {"type": "speak"}
    assert free.parse("  \n", context()).action == {"type": "none"}
    assert free.parse("Goodbye. [LEAVE]", context()).action == {"type": "leave"}
    assert FreeText().parse("[leave]", context()).action == {"type": "speak"}  # no marker: never leaves
    assert "[leave]" in free.instructions(context())
    with pytest.raises(ValueError, match="leave_marker"):
        FreeText(leave_marker="  ")


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("I vote carol", "carol"),
        ("VOTE: Carol.", "carol"),  # case and punctuation
        ("**vote** `bobby`", "bobby"),  # markdown; the longest legal name wins over its prefix "bob"
        ("vote bob", "bob"),
        ("I first thought vote alice, but final answer: vote carol", "carol"),  # the last choice wins
        ("vote zed ... no, vote bob", "bob"),  # an illegal choice followed by a legal one
    ],
)
def test_choice_parses_legal_target(text: str, target: str) -> None:
    parsed = ChoiceAction("vote", PLAYERS).parse(text, context())
    assert parsed.action == {"type": "vote", "target": target}
    assert parsed.fallback is None


def test_choice_abstain_is_a_legal_move_unless_disallowed() -> None:
    assert ChoiceAction("vote", PLAYERS).parse("I abstain.", context()).action == {"type": "abstain"}
    parsed = ChoiceAction("vote", PLAYERS, allow_abstain=False).parse("I abstain.", context())
    assert parsed.fallback == "abstain"  # the same action, but recorded as a fallback


def test_choice_illegal_target_falls_back_to_abstain_with_reason() -> None:
    parsed = ChoiceAction("vote", PLAYERS).parse("vote zed", context())
    assert parsed.action == {"type": "abstain"}
    assert parsed.fallback == "abstain"
    assert parsed.reason is not None and "'zed'" in parsed.reason and "not a legal choice" in parsed.reason
    missing = ChoiceAction("vote", PLAYERS).parse("I like turtles", context())
    assert missing.reason == "no 'vote NAME' found"
    assert not ChoiceAction("vote", PLAYERS).parse("devote carol", context()).action.get("target")


def test_random_fallback_is_legal_seeded_and_reproducible() -> None:
    action = ChoiceAction("vote", PLAYERS, fallback="random", allow_abstain=False, seed=7)
    picks = [action.parse("gibberish", context(turn=turn)).action["target"] for turn in range(30)]
    assert set(picks) <= set(PLAYERS)
    assert len(set(picks)) > 1  # depends on the turn (30 draws from 4 names are not all equal by chance)
    again = [action.parse("gibberish", context(turn=turn)).action["target"] for turn in range(30)]
    assert picks == again
    parsed = action.parse("gibberish", context())
    assert parsed.fallback == "random" and parsed.reason == "no 'vote NAME' found"
    other_episode = [
        action.parse("x", context(turn=t, scenario={"seed": 1})).action["target"] for t in range(30)
    ]
    assert other_episode != picks  # the scenario's seed changes the draws


def test_random_fallback_without_legal_options_abstains() -> None:
    parsed = ChoiceAction("vote", [], fallback="random").parse("vote bob", context())
    assert parsed.action == {"type": "abstain"}
    assert parsed.fallback == "abstain" and parsed.reason is not None and "no legal option" in parsed.reason


def test_legal_set_computed_from_state() -> None:
    # The legal targets: players still alive, other than the voter.
    def alive_others(ctx: ActionContext) -> list[str]:
        return [name for name in ctx.state["alive"] if name != ctx.role]

    vote = ChoiceAction("vote", alive_others)
    ctx = context(role="alice", alive=["alice", "bob", "carol"])
    assert vote.parse("vote alice", ctx).fallback == "abstain"  # cannot vote for oneself
    assert vote.parse("vote bob", ctx).action == {"type": "vote", "target": "bob"}
    assert vote.parse("vote carol", context(alive=["alice", "bob"])).fallback == "abstain"  # carol is dead
    assert "bob, carol" in vote.instructions(ctx)


def test_choice_config_validation() -> None:
    with pytest.raises(ValueError, match="verb"):
        ChoiceAction("vote for", PLAYERS)
    with pytest.raises(ValueError, match="fallback"):
        ChoiceAction("vote", PLAYERS, fallback="first")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sequence of str"):
        ChoiceAction("vote", "alice").legal_options(context())


def test_find_choice_reports_missing_options() -> None:
    assert find_choice("vote bob", "vote", []) == (None, "no legal options")


@settings(max_examples=300, deadline=None)
@given(text=st.text(), fallback=st.sampled_from(["abstain", "random"]), turn=st.integers(0, 10**6))
def test_choice_parse_never_raises_and_always_yields_a_legal_action(
    text: str, fallback: str, turn: int
) -> None:
    action = ChoiceAction("vote", PLAYERS, fallback=fallback)  # type: ignore[arg-type]
    parsed = action.parse(text, context(turn=turn))
    assert parsed.action["type"] in ("vote", "abstain")
    if parsed.action["type"] == "vote":
        assert parsed.action["target"] in PLAYERS
    assert (parsed.fallback is None) == (parsed.reason is None)


@settings(max_examples=200, deadline=None)
@given(text=st.text(), name=st.sampled_from(PLAYERS), prefix=st.text(max_size=20))
def test_choice_finds_an_appended_legal_vote(text: str, name: str, prefix: str) -> None:
    # Whatever came before, a reply ending in "vote NAME" is that vote.
    parsed = ChoiceAction("vote", PLAYERS).parse(f"{prefix}{text}\nvote {name}", context())
    assert parsed.action == {"type": "vote", "target": name}


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_free_text_parse_never_raises(text: str) -> None:
    assert FreeText(leave_marker="[leave]").parse(text, context()).action["type"] in (
        "speak",
        "none",
        "leave",
    )
