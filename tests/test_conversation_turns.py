"""The pure pieces behind the router: turn orders, silence counting, termination, turn plans."""

from __future__ import annotations

import pytest

from langgraph_omar.conversation import (
    Termination,
    make_utterance,
    plan_next_turn,
    round_robin,
    simultaneous,
)

NAMES = ["a", "b", "c"]


def test_round_robin_skips_roles_that_left() -> None:
    select = round_robin(NAMES)
    assert [select({"turn": t}) for t in range(4)] == [["a"], ["b"], ["c"], ["a"]]
    assert select({"turn": 1, "left": ["b"]}) == ["c"]
    assert select({"turn": 2, "left": ["c"]}) == ["a"]  # wraps around
    assert select({"turn": 0, "left": NAMES}) == []


def test_simultaneous_selects_everyone_present() -> None:
    assert simultaneous(NAMES)({"turn": 5, "left": ["b"]}) == ["a", "c"]


def test_first_plan_starts_turn_zero() -> None:
    plan = plan_next_turn({}, NAMES, round_robin(NAMES), Termination(max_turns=3))
    assert plan.speakers == ["a"] and plan.stop_reason is None
    assert plan.update == {"turn": 0, "silent_turns": 0, "speakers": ["a"]}


def test_turn_limit_counts_turns_played() -> None:
    # After turn 2 (the third turn) with max_turns=3 the conversation ends; `turn` keeps the last one played.
    state = {"turn": 2, "transcript": [make_utterance("c", "hi", turn=2)]}
    plan = plan_next_turn(state, NAMES, round_robin(NAMES), Termination(max_turns=3))
    assert plan.stop_reason == "max_turns" and plan.speakers == []
    assert "turn" not in plan.update


def test_silence_counts_consecutive_silent_turns_only() -> None:
    termination = Termination(max_silent_turns=2)
    spoke = {"turn": 4, "silent_turns": 1, "transcript": [make_utterance("a", "hi", turn=4)]}
    assert termination.silent_turns_after(spoke, NAMES) == 0
    quiet = {
        "turn": 4,
        "silent_turns": 1,
        "transcript": [make_utterance("a", "", turn=4, action={"type": "none"})],
    }
    assert termination.silent_turns_after(quiet, NAMES) == 2
    # A narrator's line is not a role saying something.
    narrated = {
        "turn": 4,
        "silent_turns": 0,
        "transcript": [make_utterance("narrator", "Night falls.", turn=4)],
    }
    assert termination.silent_turns_after(narrated, NAMES) == 1
    plan = plan_next_turn(quiet, NAMES, round_robin(NAMES), termination)
    assert plan.stop_reason == "silence"


def test_termination_reasons_in_priority_order() -> None:
    termination = Termination(max_turns=1, stop_when=lambda state: True)
    assert termination.stop_reason({"left": ["b", "a"]}, NAMES, turns_played=5) == "left:b"
    assert termination.stop_reason({}, NAMES, turns_played=5) == "condition"
    assert Termination(max_turns=1).stop_reason({}, NAMES, turns_played=0) is None
    everyone_left = Termination(leave_ends="all")
    assert everyone_left.stop_reason({"left": ["a", "b"]}, NAMES, turns_played=0) is None
    assert everyone_left.stop_reason({"left": ["a", "b", "c"]}, NAMES, turns_played=0) == "all_left"


def test_a_selector_returning_nobody_ends_the_conversation() -> None:
    plan = plan_next_turn({}, NAMES, lambda state: [], Termination())
    assert plan.stop_reason == "no_speakers"


@pytest.mark.parametrize(("selected", "message"), [("a", "list of role names"), (["a", "a"], "twice")])
def test_bad_selector_answers_are_clear_errors(selected: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_next_turn({}, NAMES, lambda state: selected, Termination())  # type: ignore[arg-type,return-value]


def test_roles_that_left_are_dropped_from_a_selection() -> None:
    plan = plan_next_turn({"left": ["b"]}, NAMES, lambda state: ["a", "b"], Termination(leave_ends="all"))
    assert plan.speakers == ["a"]
