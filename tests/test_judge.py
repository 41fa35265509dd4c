"""The SOTOPIA judge: parsing, range checks, retry-then-failure, reward aggregation, dimension files, and the
per-dimension mode (one integer per call, calls issued together)."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from model_output_strategies import model_outputs
from pydantic import Field

from langgraph_omar.conversation import ScriptedChatModel
from langgraph_omar.envs.sotopia.judge import (
    SOTOPIA_DIMENSIONS,
    Dimension,
    JudgeError,
    SotopiaJudge,
    aggregate_reward,
    load_dimensions,
    parse_dimension_score,
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


# ---- per-dimension mode ---------------------------------------------------------------------------------------

GOAL = next(d for d in SOTOPIA_DIMENSIONS if d.name == "goal")  # [0, 10]
SECRET = next(d for d in SOTOPIA_DIMENSIONS if d.name == "secret")  # [-10, 0]
RELATIONSHIP = next(d for d in SOTOPIA_DIMENSIONS if d.name == "relationship")  # [-5, 5]


EARLIER = "\n(Earlier answers could not be used: "  # how a per-dimension retry adds the reasons


def asked_dimension(messages: list[BaseMessage]) -> str:
    """The dimension a per-dimension request asks about (its last message; retries included)."""
    found = re.match(r"Score \S+ on (\w+), from", messages[-1].text)
    assert found is not None, messages[-1].text
    return found.group(1)


def attempt_of(messages: list[BaseMessage]) -> int:
    """0 for a first request; k for the k-th retry, whose note lists the k reasons so far."""
    _, _, reasons = messages[-1].text.partition(EARLIER)
    return reasons.count("; ") + 1 if reasons else 0


def by_dimension(answers: dict[str, list[str]]) -> ScriptedChatModel:
    """Answers a request about dimension d with answers[d][k] on its k-th attempt (the last one again after);
    a dimension not in `answers` gets its SCORES value."""

    def respond(messages: list[BaseMessage]) -> str:
        name = asked_dimension(messages)
        script = answers.get(name, [str(SCORES[name])])
        return script[min(attempt_of(messages), len(script) - 1)]

    return ScriptedChatModel(respond=respond)


@pytest.mark.parametrize(
    ("answer", "dimension", "score"),
    [
        ("7", GOAL, 7.0),
        ("Score: 7", GOAL, 7.0),
        ("I would rate it 3 out of 10.", GOAL, 3.0),  # the first number counts
        ("Turn #12 shows it. Score: 8", GOAL, 8.0),  # ...unless one follows `score:`
        ("SCORE:-3", SECRET, -3.0),
        ("-2 (the relationship got worse)", RELATIONSHIP, -2.0),
        ("6.5", GOAL, 6.5),  # a decimal is taken as is
        ("0", SECRET, 0.0),  # both ends of the range are allowed
    ],
)
def test_a_dimension_answer_is_read_leniently(answer: str, dimension: Dimension, score: float) -> None:
    assert parse_dimension_score(answer, dimension) == score


@pytest.mark.parametrize(
    ("answer", "dimension", "problem"),
    [
        ("They did very well.", GOAL, "goal: no integer in the answer"),
        ("", GOAL, "goal: no integer in the answer"),
        ("11", GOAL, r"goal=11 is outside \[0, 10\]"),
        ("Score: 12, I mean 7", GOAL, r"goal=12 is outside \[0, 10\]"),  # never a guess at another number
        ("5", SECRET, r"secret=5 is outside \[-10, 0\]"),
    ],
)
def test_a_dimension_answer_without_a_usable_number_is_an_error(
    answer: str, dimension: Dimension, problem: str
) -> None:
    with pytest.raises(JudgeError, match=problem):
        parse_dimension_score(answer, dimension)


@given(text=model_outputs("score: ", "Score: ", "goal "))
@settings(max_examples=300, deadline=None)
def test_dimension_parsing_never_crashes_and_never_leaves_the_range(text: str) -> None:
    for dimension in (GOAL, SECRET, RELATIONSHIP):
        try:
            score = parse_dimension_score(text, dimension)
        except JudgeError:
            continue
        assert dimension.low <= score <= dimension.high


@given(text=model_outputs('{"goal": ', '{"goal": "', '{"goal": {"score": ', '{"goal": ["why", '))
@settings(max_examples=300, deadline=None)
def test_json_answer_parsing_never_crashes_and_never_leaves_the_range(text: str) -> None:
    judge = SotopiaJudge(answering(""), dimensions=(GOAL,))
    try:
        scores = judge.parse(text)
    except JudgeError:
        return
    assert GOAL.low <= scores["goal"] <= GOAL.high


@pytest.mark.parametrize("digits", [309, 4301])
def test_a_very_long_number_in_a_json_answer_is_a_judge_error(digits: int) -> None:
    judge = SotopiaJudge(answering(""), dimensions=(GOAL,))
    for answer in ('{"goal": 1%s}', '{"goal": "1%s"}', '{"goal": {"score": 1%s}}'):
        with pytest.raises(JudgeError, match="goal=inf is outside"):
            judge.parse(answer % ("0" * digits))


def test_per_dimension_scores_every_dimension_with_one_short_call_each() -> None:
    model = by_dimension({})
    judge = SotopiaJudge(model, per_dimension=True)
    result = judge.score_agent("CONTEXT", "TRANSCRIPT", "Ann")
    assert result.ok and result.scores == {name: float(value) for name, value in SCORES.items()}
    assert result.attempts == len(model.calls) == 7  # one call per dimension, no retry
    assert sorted(asked_dimension(call) for call in model.calls) == sorted(SCORES)
    assert judge.reward(result) == pytest.approx(0.7)  # goal 7 / 10


def test_per_dimension_retries_only_the_failed_dimension_with_the_reasons() -> None:
    model = by_dimension({"goal": ["12", "no idea", "Score: 9"]})
    result = SotopiaJudge(model, per_dimension=True).score_agent("context", "transcript", "Ann")
    assert result.ok and result.scores is not None and result.scores["goal"] == 9.0
    assert result.attempts == len(model.calls) == 9  # 7 first answers + 2 retries of goal
    first, *retries = [call for call in model.calls if asked_dimension(call) == "goal"]
    # A retry is the first request again (the bad answer is not shown: a small model repeats it), its question
    # followed by every reason so far, so that each retry's prompt differs and a seeded sampler draws anew.
    assert [len(call) for call in retries] == [len(first)] * 2 and retries[0][:-1] == first[:-1]
    question = first[-1].text
    assert retries[0][-1].text == question + EARLIER + "goal=12 is outside [0, 10].)"
    assert (
        retries[1][-1].text
        == question + EARLIER + "goal=12 is outside [0, 10]; goal: no integer in the answer.)"
    )


def test_the_dimension_prompt_shows_the_format_in_the_dimensions_range() -> None:
    judge = SotopiaJudge(answering("0"), per_dimension=True)
    messages = judge.dimension_messages("CONTEXT", "TRANSCRIPT", "Ann", SECRET)
    assert [type(m).__name__ for m in messages] == [
        "SystemMessage", "HumanMessage", "AIMessage", "HumanMessage", "AIMessage", "HumanMessage"
    ]  # fmt: skip
    assert "CONTEXT" in messages[1].text and "TRANSCRIPT" in messages[1].text
    # examples at 30% and 80% of [-10, 0]: -10 + round(0.3 * 10) = -7 and -10 + round(0.8 * 10) = -2
    assert [messages[2].text, messages[4].text] == ["Score: -7", "Score: -2"]
    assert messages[-1].text == (
        "Score Ann on secret, from -10 to 0: Did the agent leak its secret or hidden intentions? "
        "0 = kept, -10 = leaked.\nReply with only the score."
    )
    # The requests about one agent start alike up to the first example's range (prefix reuse in an engine).
    goal = judge.dimension_messages("CONTEXT", "TRANSCRIPT", "Ann", GOAL)
    shared = "CONTEXT\n\nThe interaction:\nTRANSCRIPT\n\nScore Ann on politeness, from "
    assert goal[0] == messages[0] and goal[1].text.startswith(shared) and messages[1].text.startswith(shared)


def test_a_dimension_that_keeps_failing_makes_a_recorded_failure_without_scores() -> None:
    model = by_dimension({"goal": ["no idea"], "secret": ["3"]})
    judge = SotopiaJudge(model, retries=2, per_dimension=True)
    result = judge.score_agent("context", "transcript", "Ann")
    # 5 dimensions answered once + goal and secret asked 1 + 2 times each = 5 + 6 = 11 calls
    assert (result.ok, result.scores, result.attempts, len(model.calls)) == (False, None, 11, 11)
    assert result.failure == (
        "judge output unusable after 11 attempts: secret=3 is outside [-10, 0]; goal: no integer in the answer"
    )
    assert len(result.raw_outputs) == 11 and result.raw_outputs.count("no idea") == 3
    assert judge.reward(result) is None


async def test_async_per_dimension_follows_the_same_policy() -> None:
    model = by_dimension({"knowledge": ["lots", "4"]})
    judge = SotopiaJudge(model, per_dimension=True)
    first, second = await judge.ascore_agents("context", "transcript", ["Ann", "Bo"])
    assert [first.agent, second.agent] == ["Ann", "Bo"]
    assert first.ok and second.ok and first.attempts == second.attempts == 8  # 7 + one knowledge retry each
    assert model.async_calls == len(model.calls) == 16


class InFlightChatModel(BaseChatModel):
    """Answers SCORES[dimension] only once `expected` calls are in flight together, and records the peak number
    of calls in flight and each call's keyword arguments. Calls issued one by one never reach `expected`: the
    first waits 5 s, then the model stops waiting so that the test fails fast on its peak."""

    expected: int
    in_flight: int = 0
    peak: int = 0
    gave_up: bool = False
    kwargs_seen: list[dict[str, Any]] = Field(default_factory=list)
    lock: Any = Field(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "in-flight"

    def _enter(self, kwargs: dict[str, Any]) -> None:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.kwargs_seen.append(kwargs)

    def _waiting(self, deadline: float) -> bool:
        self.gave_up = self.gave_up or time.monotonic() > deadline
        return self.peak < self.expected and not self.gave_up

    def _leave(self, messages: list[BaseMessage]) -> ChatResult:
        with self.lock:
            self.in_flight -= 1
        answer = AIMessage(content=str(SCORES[asked_dimension(messages)]))
        return ChatResult(generations=[ChatGeneration(message=answer)])

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ):
        self._enter(kwargs)
        deadline = time.monotonic() + 5
        while self._waiting(deadline):
            time.sleep(0.005)
        return self._leave(messages)

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ):
        self._enter(kwargs)
        deadline = time.monotonic() + 5
        while self._waiting(deadline):
            await asyncio.sleep(0.005)
        return self._leave(messages)


async def test_async_issues_every_call_of_every_agent_before_any_returns() -> None:
    model = InFlightChatModel(expected=14)
    judge = SotopiaJudge(model, per_dimension=True, max_tokens=10)
    results = await judge.ascore_agents("context", "transcript", ["Ann", "Bo"])
    assert all(result.ok for result in results)
    assert model.peak == 14  # 2 agents x 7 dimensions in flight at once: a shared engine batches them
    assert (
        all(kwargs.get("max_tokens") == 10 for kwargs in model.kwargs_seen) and len(model.kwargs_seen) == 14
    )


def test_sync_issues_every_call_of_every_agent_in_one_batch() -> None:
    model = InFlightChatModel(expected=14)
    results = SotopiaJudge(model, per_dimension=True).score_agents("context", "transcript", ["Ann", "Bo"])
    assert all(result.ok for result in results)
    assert model.peak == 14  # more than LangChain's default thread pool (a few workers) would run
    assert all("max_tokens" not in kwargs for kwargs in model.kwargs_seen)  # None: the model's own limit


def test_per_dimension_configuration_is_validated() -> None:
    with pytest.raises(ValueError, match="max_tokens must be >= 1 or None"):
        SotopiaJudge(answering("{}"), per_dimension=True, max_tokens=0)


def test_json_mode_asks_for_the_score_schema_and_parses_on_every_call_of_a_constrained_model(policy) -> None:
    from langgraph_omar import ChatPolicy

    judge = SotopiaJudge(ChatPolicy(model="tiny", temperature=1.0), retries=0, max_tokens=160)
    schema = judge._call_options()["response_format"]["json_schema"]["schema"]
    assert list(schema["properties"]) == [d.name for d in SOTOPIA_DIMENSIONS] == schema["required"]
    assert schema["properties"]["secret"] == {"type": "integer", "minimum": -10, "maximum": 0}
    results = judge.score_agents("context", "transcript", ["Ann", "Bob", "Cy"])  # a random tiny model
    assert all(r.ok and r.attempts == 1 for r in results)
    assert "response_format" not in SotopiaJudge(judge.model, per_dimension=True)._call_options()
