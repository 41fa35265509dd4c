"""The SOTOPIA judge: parsing, range checks, retry-then-failure, reward aggregation, dimension files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.messages import BaseMessage

from langgraph_omar.conversation import ScriptedChatModel
from langgraph_omar.envs.judge import (
    SOTOPIA_DIMENSIONS,
    Dimension,
    JudgeError,
    SotopiaJudge,
    aggregate_reward,
    load_dimensions,
)
from langgraph_omar.errors import OmarError

SHARED_DIMENSIONS = (
    Path(__file__).parents[1].parent / "shared" / "data" / "sotopia" / "evaluation_dimensions.json"
)
SCORES = {"believability": 8, "relationship": 1, "knowledge": 4, "secret": -2, "social_rules": 0,
          "financial_and_material_benefits": -1, "goal": 7}  # fmt: skip


def answering(*answers: str) -> ScriptedChatModel:
    """Gives answers[k] on its k-th call (the last one again after that)."""
    calls: list[int] = []

    def respond(messages: list[BaseMessage]) -> str:
        calls.append(1)
        return answers[min(len(calls) - 1, len(answers) - 1)]

    return ScriptedChatModel(respond=respond)


@pytest.mark.parametrize(
    "answer",
    [
        json.dumps(SCORES),
        "Here is my evaluation:\n```json\n" + json.dumps(SCORES) + "\n```",
        json.dumps({name: {"reasoning": "because", "score": value} for name, value in SCORES.items()}),
        json.dumps(
            {name: ["because", value] for name, value in SCORES.items()}
        ),  # SOTOPIA's (reasoning, score)
        json.dumps({name.replace("_", " ").title(): str(value) for name, value in SCORES.items()}),
    ],
)
def test_parse_accepts_the_usual_answer_shapes(answer: str) -> None:
    judge = SotopiaJudge(answering(answer))
    assert judge.parse(answer) == {name: float(value) for name, value in SCORES.items()}


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("They did fine, 7/10.", "no JSON object found"),
        (json.dumps({**SCORES, "goal": 11}), r"goal=11 is outside \[0, 10\]"),
        (json.dumps({**SCORES, "secret": 3}), r"secret=3 is outside \[-10, 0\]"),
        (json.dumps({k: v for k, v in SCORES.items() if k != "knowledge"}), "knowledge is missing"),
        (json.dumps({**SCORES, "goal": "high"}), "goal has no numeric score"),
        (json.dumps({**SCORES, "goal": True}), "goal has no numeric score"),
    ],
)
def test_parse_rejects_unusable_answers(answer: str, problem: str) -> None:
    with pytest.raises(JudgeError, match=problem):
        SotopiaJudge(answering(answer)).parse(answer)


def test_a_bad_answer_is_retried_with_the_reason() -> None:
    model = answering(json.dumps({**SCORES, "goal": 12}), json.dumps(SCORES))
    judge = SotopiaJudge(model)
    result = judge.score_agent("context", "transcript", "Ann")
    assert result.ok and result.attempts == 2 and result.scores == {k: float(v) for k, v in SCORES.items()}
    retry_request = model.calls[1][-1].text
    assert "goal=12 is outside [0, 10]" in retry_request
    assert model.calls[1][-2].text == json.dumps({**SCORES, "goal": 12})  # the bad answer is shown back
    assert judge.reward(result) == pytest.approx(0.7)  # goal 7 / 10


def test_retries_then_a_recorded_failure_without_a_score() -> None:
    model = answering("no idea")
    result = SotopiaJudge(model, retries=3).score_agent("context", "transcript", "Ann")
    assert (result.ok, result.scores, result.attempts, len(model.calls)) == (False, None, 4, 4)
    assert result.failure is not None and "after 4 attempts: no JSON object found" in result.failure
    assert result.raw_outputs == ("no idea",) * 4
    assert SotopiaJudge(model).reward(result) is None
    once = answering("no idea")
    assert SotopiaJudge(once, retries=0).score_agent("c", "t", "Ann").attempts == 1 and len(once.calls) == 1


async def test_async_scoring_follows_the_same_policy() -> None:
    model = answering("???", json.dumps(SCORES))
    result = await SotopiaJudge(model).ascore_agent("context", "transcript", "Ann")
    assert result.ok and result.attempts == 2 and model.async_calls == 2


def test_the_prompt_names_every_dimension_with_its_range() -> None:
    messages = SotopiaJudge(answering("{}")).messages("CONTEXT", "TRANSCRIPT", "Ann")
    request = messages[-1].text
    assert "CONTEXT" in request and "TRANSCRIPT" in request and "Evaluate Ann" in request
    for dimension in SOTOPIA_DIMENSIONS:
        assert f"{dimension.name} (integer from {dimension.low} to {dimension.high})" in request


def test_reward_aggregations() -> None:
    scores = {k: float(v) for k, v in SCORES.items()}
    assert aggregate_reward(scores) == pytest.approx(0.7)  # goal 7 / 10
    # goal (7 - 0) / 10 = 0.7; relationship (1 + 5) / 10 = 0.6; knowledge (4 - 0) / 10 = 0.4; mean = 1.7 / 3
    assert aggregate_reward(scores, "normalized_mean") == pytest.approx(1.7 / 3)
    assert aggregate_reward(scores, lambda s: s["believability"]) == 8.0
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate_reward(scores, "median")
    judge = SotopiaJudge(answering("{}"), aggregation="normalized_mean")
    assert judge.aggregation == "normalized_mean"


def test_judge_configuration_is_validated() -> None:
    with pytest.raises(ValueError, match="retries must be >= 0"):
        SotopiaJudge(answering("{}"), retries=-1)
    only_goal = (Dimension("goal", 0, 10, "goal"),)
    with pytest.raises(ValueError, match=r"needs the dimensions \['relationship', 'knowledge'\]"):
        SotopiaJudge(answering("{}"), dimensions=only_goal, aggregation="normalized_mean")
    with pytest.raises(ValueError, match="expected low < high"):
        Dimension("goal", 10, 0, "")


def test_dimensions_from_a_file(tmp_path: Path) -> None:
    if SHARED_DIMENSIONS.is_file():
        loaded = load_dimensions(SHARED_DIMENSIONS)
        assert [(d.name, d.low, d.high) for d in loaded] == [
            (d.name, d.low, d.high) for d in SOTOPIA_DIMENSIONS
        ]
    bad = tmp_path / "dims.json"
    bad.write_text(json.dumps({"SotopiaDimensions": {"goal": {"range": [0]}}}))
    with pytest.raises(OmarError, match=r"key SotopiaDimensions.goal.range: expected \[low, high\]"):
        load_dimensions(bad)
