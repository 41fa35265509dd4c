"""An LLM judge that scores each SOTOPIA agent on SOTOPIA's seven dimensions, over any LangChain chat model.

One call per agent asks for a JSON object with one integer score per dimension. Accepted answers: a JSON object
(in prose or a code fence, found anywhere in the output) mapping each dimension to a number, to
`{"score": n, ...}` or to SOTOPIA's `[reasoning, n]`. An answer that does not parse, misses a dimension or has a
score outside the dimension's range is retried (`retries` times, telling the model what was wrong); after that
the agent's result is a recorded failure with no scores: a score is never invented.

Rewards from scores (`aggregate_reward`): "goal" (default) = goal / 10; "normalized_mean" = the mean of the
min-max-normalised goal, relationship and knowledge scores; or any function of the scores.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig

from langgraph_omar.errors import OmarError


@dataclass(frozen=True)
class Dimension:
    """A scored dimension: its name, its inclusive score range and what the judge should assess."""

    name: str
    low: int
    high: int
    instruction: str

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"Dimension {self.name!r}: expected low < high, got [{self.low}, {self.high}]")

    def normalise(self, score: float) -> float:
        """`score` mapped linearly from [low, high] to [0, 1]."""
        return (score - self.low) / (self.high - self.low)


# SOTOPIA's dimensions and ranges (evaluation_dimensions.json), with instructions in this project's own words.
SOTOPIA_DIMENSIONS: tuple[Dimension, ...] = (
    Dimension("believability", 0, 10, "Does the agent act naturally and in keeping with its character?"),
    Dimension("relationship", -5, 5, "Did the interaction improve (+) or harm (-) the agent's relationship?"),
    Dimension("knowledge", 0, 10, "How much new, important information did the agent gain?"),
    Dimension(
        "secret", -10, 0, "Did the agent leak its secret or hidden intentions? 0 = kept, -10 = leaked."
    ),
    Dimension("social_rules", -10, 0, "Did the agent break moral rules or laws? 0 = none, -10 = severe."),
    Dimension(
        "financial_and_material_benefits",
        -5,
        5,
        "Did the agent gain (+) or lose (-) money or material goods?",
    ),
    Dimension("goal", 0, 10, "How fully did the agent achieve its social goal? 10 = completely."),
)
NORMALIZED_MEAN_DIMENSIONS = ("goal", "relationship", "knowledge")

Aggregation = str | Callable[[Mapping[str, float]], float]


class JudgeError(OmarError):
    """Judge output that cannot be used (the message says why); caught and retried by the judge."""


def load_dimensions(path: str | Path, key: str = "SotopiaDimensions") -> tuple[Dimension, ...]:
    """Dimensions read from an `evaluation_dimensions.json` file: `{key: {name: {"range": [lo, hi],
    "description": text}}}` (the judge then uses those descriptions as its instructions)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise OmarError(f"{path}: cannot read dimensions ({error})") from None
    table = raw.get(key) if isinstance(raw, dict) else None
    if not isinstance(table, dict) or not table:
        raise OmarError(f"{path}: key {key!r}: missing; expected an object of dimensions")
    dimensions = []
    for name, spec in table.items():
        bounds = spec.get("range") if isinstance(spec, dict) else None
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, int) for b in bounds)):
            raise OmarError(f"{path}: key {key}.{name}.range: expected [low, high] integers")
        dimensions.append(Dimension(name, bounds[0], bounds[1], str(spec.get("description", ""))))
    return tuple(dimensions)


@dataclass(frozen=True)
class JudgeScore:
    """One agent's evaluation: `scores` (dimension -> score) or, after every attempt failed, `failure`."""

    agent: str
    scores: dict[str, float] | None
    failure: str | None = None
    attempts: int = 1
    raw_outputs: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.scores is not None


def aggregate_reward(
    scores: Mapping[str, float],
    aggregation: Aggregation = "goal",
    dimensions: Sequence[Dimension] = SOTOPIA_DIMENSIONS,
) -> float:
    """The scalar reward of one agent's scores (see the module docstring)."""
    if callable(aggregation):
        return float(aggregation(scores))
    by_name = {dimension.name: dimension for dimension in dimensions}
    if aggregation == "goal":
        return scores["goal"] / 10.0
    if aggregation == "normalized_mean":
        parts = [by_name[name].normalise(scores[name]) for name in NORMALIZED_MEAN_DIMENSIONS]
        return sum(parts) / len(parts)
    raise ValueError(f"unknown aggregation {aggregation!r}; expected 'goal', 'normalized_mean' or a function")


class SotopiaJudge:
    """Scores agents on `dimensions` with `model`; see the module docstring for the retry policy."""

    def __init__(
        self,
        model: BaseChatModel,
        dimensions: Sequence[Dimension] = SOTOPIA_DIMENSIONS,
        retries: int = 2,
        aggregation: Aggregation = "goal",
    ) -> None:
        if retries < 0:
            raise ValueError(f"SotopiaJudge.retries must be >= 0, got {retries}")
        names = [dimension.name for dimension in dimensions]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"SotopiaJudge.dimensions must be non-empty with unique names, got {names}")
        needed = {"goal": ("goal",), "normalized_mean": NORMALIZED_MEAN_DIMENSIONS}.get(str(aggregation), ())
        if not callable(aggregation) and aggregation not in ("goal", "normalized_mean"):
            raise ValueError(
                f"SotopiaJudge.aggregation: expected 'goal', 'normalized_mean' or a function, got {aggregation!r}"
            )
        missing = [name for name in needed if name not in names]
        if missing:
            raise ValueError(f"SotopiaJudge.aggregation {aggregation!r} needs the dimensions {missing}")
        self.model = model
        self.dimensions = tuple(dimensions)
        self.retries = retries
        self.aggregation = aggregation

    def messages(self, context: str, transcript: str, agent: str) -> list[BaseMessage]:
        """The first request for `agent`'s scores."""
        lines = [f"- {d.name} (integer from {d.low} to {d.high}): {d.instruction}" for d in self.dimensions]
        template = ", ".join(f'"{d.name}": <{d.low}..{d.high}>' for d in self.dimensions)
        return [
            SystemMessage("You are an impartial judge of social interactions. You answer with JSON only."),
            HumanMessage(
                f"{context}\n\nThe interaction:\n{transcript}\n\n"
                f"Evaluate {agent} on each dimension:\n" + "\n".join(lines) + "\n\n"
                f"Answer with only a JSON object: {{{template}}}"
            ),
        ]

    def parse(self, text: str) -> dict[str, float]:
        """The scores in `text`; raises JudgeError naming what is missing, malformed or out of range."""
        found = _json_object(text)
        if found is None:
            raise JudgeError("no JSON object found in the answer")
        by_key = {_key(name): value for name, value in found.items()}
        scores: dict[str, float] = {}
        problems = []
        for dimension in self.dimensions:
            if dimension.name not in by_key:
                problems.append(f"{dimension.name} is missing")
                continue
            score = _score_value(by_key[dimension.name])
            if score is None:
                problems.append(f"{dimension.name} has no numeric score")
            elif not dimension.low <= score <= dimension.high:
                problems.append(f"{dimension.name}={score:g} is outside [{dimension.low}, {dimension.high}]")
            else:
                scores[dimension.name] = score
        if problems:
            raise JudgeError("; ".join(problems))
        return scores

    def score_agent(
        self, context: str, transcript: str, agent: str, config: RunnableConfig | None = None
    ) -> JudgeScore:
        """Ask, check, and retry on bad output; a failure after `1 + retries` attempts has no scores."""
        messages = self.messages(context, transcript, agent)
        outputs: list[str] = []
        error = ""
        for _ in range(1 + self.retries):
            text = self.model.invoke(messages, config=config).text
            outputs.append(text)
            try:
                return JudgeScore(agent, self.parse(text), attempts=len(outputs), raw_outputs=tuple(outputs))
            except JudgeError as problem:
                error = str(problem)
                messages = [*messages, AIMessage(text), HumanMessage(_retry_request(error))]
        return self._failure(agent, outputs, error)

    async def ascore_agent(
        self, context: str, transcript: str, agent: str, config: RunnableConfig | None = None
    ) -> JudgeScore:
        """`score_agent` for async graphs (same prompts, same retry policy)."""
        messages = self.messages(context, transcript, agent)
        outputs: list[str] = []
        error = ""
        for _ in range(1 + self.retries):
            text = (await self.model.ainvoke(messages, config=config)).text
            outputs.append(text)
            try:
                return JudgeScore(agent, self.parse(text), attempts=len(outputs), raw_outputs=tuple(outputs))
            except JudgeError as problem:
                error = str(problem)
                messages = [*messages, AIMessage(text), HumanMessage(_retry_request(error))]
        return self._failure(agent, outputs, error)

    def reward(self, score: JudgeScore) -> float | None:
        """The agent's scalar reward, or None when judging failed (no reward is made up)."""
        if score.scores is None:
            return None
        return aggregate_reward(score.scores, self.aggregation, self.dimensions)

    def _failure(self, agent: str, outputs: list[str], error: str) -> JudgeScore:
        failure = f"judge output unusable after {len(outputs)} attempts: {error}"
        return JudgeScore(agent, None, failure=failure, attempts=len(outputs), raw_outputs=tuple(outputs))


def _retry_request(error: str) -> str:
    return f"That answer could not be used: {error}. Answer again with only the JSON object."


def _json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in `text` (prose and code fences around it are ignored)."""
    decoder = json.JSONDecoder()
    for start in [i for i, char in enumerate(text) if char == "{"][:50]:
        try:
            value, _ = decoder.raw_decode(text, start)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None


def _key(name: object) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def _score_value(value: object) -> float | None:
    if isinstance(value, dict):
        value = value.get("score")
    elif isinstance(value, list) and value:
        value = value[-1]
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+(?:\.\d+)?\s*", value):
        return float(value)
    return None
