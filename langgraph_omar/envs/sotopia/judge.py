"""An LLM judge that scores each SOTOPIA agent on SOTOPIA's seven dimensions, over any LangChain chat model.

Two ways to ask:
- JSON mode (default): one call per agent asks for a JSON object with one integer score per dimension. The
  call carries `response_format` (OpenAI's json_schema shape: each dimension an integer in its range, all
  required): `ChatPolicy` then decodes under that schema, so even the 135M default model writes a parseable
  answer on every call, and OpenAI-style models use their own structured output; other models ignore it.
  Accepted answers: a JSON object (in prose or a code fence, found anywhere in the output) mapping each
  dimension to a number, to `{"score": n, ...}` or to SOTOPIA's `[reasoning, n]`.
- Per-dimension mode (`per_dimension=True`): one short call per (agent, dimension) asks for a single integer
  in the dimension's range; the answer's first number counts (the one after `score:` when there is one). For
  models that take no `response_format` and cannot write the 7-score JSON unaided. All the calls are issued together (the
  async path gathers them, the sync path batches them), so a shared engine serves them in one batch.
In both modes an answer that does not parse, misses a dimension or has a score outside the dimension's range is
retried (`retries` times per question, telling the model what was wrong: JSON mode goes on with the
conversation, per-dimension mode asks the first question again with the reasons); after that the agent's
result is a recorded failure with no scores (per dimension: when any dimension still fails): a score is never
invented.

Rewards from scores (`aggregate_reward`): "goal" (default) = goal / 10; "normalized_mean" = the mean of the
min-max-normalised goal, relationship and knowledge scores; or any function of the scores.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig

from langgraph_omar.envs.sotopia.rules import json_objects
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
    """One agent's evaluation: `scores` (dimension -> score) or, after every attempt failed, `failure`.

    attempts: the model calls made for this agent (per-dimension mode: summed over the dimensions);
    raw_outputs: their answers, question by question.
    """

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


def parse_dimension_score(text: str, dimension: Dimension) -> float:
    """The score in a per-dimension answer: the number after `score:` when there is one, else the first number
    (a decimal is taken as is); raises JudgeError when there is none or it is outside the dimension's range."""
    found = _LABELLED_NUMBER.search(text) or _NUMBER.search(text)
    if found is None:
        raise JudgeError(f"{dimension.name}: no integer in the answer")
    score = float(found.group("number"))
    if not dimension.low <= score <= dimension.high:
        raise JudgeError(f"{dimension.name}={score:g} is outside [{dimension.low}, {dimension.high}]")
    return score


_NUMBER_PATTERN = r"(?P<number>[-+]?[0-9]+(?:\.[0-9]+)?)"
_NUMBER = re.compile(r"(?<![0-9.])" + _NUMBER_PATTERN)
_LABELLED_NUMBER = re.compile(r"score\s*:\s*" + _NUMBER_PATTERN, re.IGNORECASE)


_Retry = Callable[[list[BaseMessage], str, list[str]], list[BaseMessage]]


@dataclass
class _Question:
    """One request asked until its answer parses: the next request, the answers so far, the scores or errors.

    retry: (the request just answered, its unusable answer, every error so far) -> the next request.
    """

    messages: list[BaseMessage]
    parse: Callable[[str], dict[str, float]]
    retry: _Retry
    outputs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    scores: dict[str, float] | None = None

    def take(self, text: str) -> bool:
        """Record an answer; True when it parsed, else the next request is the retry."""
        self.outputs.append(text)
        try:
            self.scores = self.parse(text)
            return True
        except JudgeError as problem:
            self.errors.append(str(problem))
            self.messages = self.retry(self.messages, text, self.errors)
            return False


def _follow_up(request: list[BaseMessage], answer: str, errors: list[str]) -> list[BaseMessage]:
    """JSON mode's retry: the conversation goes on with the bad answer and what was wrong with it."""
    retry = f"That answer could not be used: {errors[-1]}. Answer again with only the JSON object."
    return [*request, AIMessage(answer), HumanMessage(retry)]


def _ask_again(
    first: list[BaseMessage], request: list[BaseMessage], answer: str, errors: list[str]
) -> list[BaseMessage]:
    """Per-dimension retry: the first request again, its question followed by every reason so far. A small
    model shown its bad answer repeats it; and each retry's text differs, so a seeded sampler draws anew."""
    *head, question = first
    note = f"\n(Earlier answers could not be used: {'; '.join(errors)}.)"
    return [*head, HumanMessage(question.text + note)]


class SotopiaJudge:
    """Scores agents on `dimensions` with `model`; see the module docstring for the two modes and the retries.

    per_dimension: one call per (agent, dimension) asking for one integer, instead of one JSON call per agent.
    max_tokens: passed to every call as `max_tokens` (None: the model's own limit); per-dimension answers need
        only a few tokens.
    """

    def __init__(
        self,
        model: BaseChatModel,
        dimensions: Sequence[Dimension] = SOTOPIA_DIMENSIONS,
        retries: int = 2,
        aggregation: Aggregation = "goal",
        *,
        per_dimension: bool = False,
        max_tokens: int | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"SotopiaJudge.retries must be >= 0, got {retries}")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"SotopiaJudge.max_tokens must be >= 1 or None, got {max_tokens}")
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
        self.per_dimension = per_dimension
        self.max_tokens = max_tokens

    def messages(self, context: str, transcript: str, agent: str) -> list[BaseMessage]:
        """The first request for `agent`'s scores (JSON mode)."""
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

    def dimension_messages(
        self, context: str, transcript: str, agent: str, dimension: Dimension
    ) -> list[BaseMessage]:
        """The first request for `agent`'s score on one dimension (per-dimension mode).

        Two worked exchanges on dimensions that are not scored (politeness, clarity; answers at 30% and 80% of
        the range) show the answer format in the dimension's own range: without them the 135M default model
        answered in prose (measured: 6 of 42 answers held a usable number; with them 38 of 42). The shared
        part comes first, so an engine with a prefix cache reuses it across an agent's dimensions.
        """
        span = f"from {dimension.low} to {dimension.high}"
        example_low = dimension.low + round(0.3 * (dimension.high - dimension.low))
        example_high = dimension.low + round(0.8 * (dimension.high - dimension.low))
        return [
            SystemMessage("You are an impartial judge of social interactions. You answer with one integer."),
            HumanMessage(
                f"{context}\n\nThe interaction:\n{transcript}\n\n"
                f"Score {agent} on politeness, {span}. Reply with only the score."
            ),
            AIMessage(f"Score: {example_low}"),
            HumanMessage(f"Score {agent} on clarity, {span}. Reply with only the score."),
            AIMessage(f"Score: {example_high}"),
            HumanMessage(
                f"Score {agent} on {dimension.name}, {span}: {dimension.instruction}\nReply with only the score."
            ),
        ]

    def parse(self, text: str) -> dict[str, float]:
        """The scores in a JSON-mode answer; raises JudgeError naming what is missing, malformed or out of range."""
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
        return self.score_agents(context, transcript, [agent], config)[0]

    def score_agents(
        self, context: str, transcript: str, agents: Sequence[str], config: RunnableConfig | None = None
    ) -> list[JudgeScore]:
        """`score_agent` for several agents, every pending question of every agent in one `model.batch`."""
        questions = {agent: self._questions(context, transcript, agent) for agent in agents}
        pending = [question for asked in questions.values() for question in asked]
        for _ in range(1 + self.retries):
            if not pending:
                break
            # One thread per question (LangChain's default pool has a few), so an engine batches them all.
            batch_config: RunnableConfig = {"max_concurrency": len(pending), **(config or {})}
            answers = self.model.batch([q.messages for q in pending], batch_config, **self._call_options())
            pending = [q for q, answer in zip(pending, answers, strict=True) if not q.take(answer.text)]
        return [self._result(agent, asked) for agent, asked in questions.items()]

    async def ascore_agent(
        self, context: str, transcript: str, agent: str, config: RunnableConfig | None = None
    ) -> JudgeScore:
        """`score_agent` for async graphs (same prompts, same retry policy); the questions run concurrently."""
        return (await self.ascore_agents(context, transcript, [agent], config))[0]

    async def ascore_agents(
        self, context: str, transcript: str, agents: Sequence[str], config: RunnableConfig | None = None
    ) -> list[JudgeScore]:
        """`ascore_agent` for several agents: every question of every agent is issued at once."""
        questions = {agent: self._questions(context, transcript, agent) for agent in agents}
        await asyncio.gather(*(self._aask(q, config) for asked in questions.values() for q in asked))
        return [self._result(agent, asked) for agent, asked in questions.items()]

    def reward(self, score: JudgeScore) -> float | None:
        """The agent's scalar reward, or None when judging failed (no reward is made up)."""
        if score.scores is None:
            return None
        return aggregate_reward(score.scores, self.aggregation, self.dimensions)

    def _questions(self, context: str, transcript: str, agent: str) -> list[_Question]:
        if not self.per_dimension:
            return [_Question(self.messages(context, transcript, agent), self.parse, _follow_up)]
        questions = []
        for dimension in self.dimensions:
            first = self.dimension_messages(context, transcript, agent, dimension)
            questions.append(
                _Question(first, partial(_dimension_scores, dimension), partial(_ask_again, first))
            )
        return questions

    async def _aask(self, question: _Question, config: RunnableConfig | None) -> None:
        for _ in range(1 + self.retries):
            answer = await self.model.ainvoke(question.messages, config=config, **self._call_options())
            if question.take(answer.text):
                return

    def _call_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {} if self.max_tokens is None else {"max_tokens": self.max_tokens}
        if not self.per_dimension:
            options["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "scores", "schema": self.score_schema(), "strict": True},
            }
        return options

    def score_schema(self) -> dict[str, Any]:
        """The JSON-mode answer's schema: every dimension, in order, an integer in its range."""
        properties = {
            d.name: {"type": "integer", "minimum": d.low, "maximum": d.high} for d in self.dimensions
        }
        return {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        }

    def _result(self, agent: str, questions: Sequence[_Question]) -> JudgeScore:
        """Scores when every question parsed; else a recorded failure naming every question's last error."""
        outputs = tuple(output for question in questions for output in question.outputs)
        errors = [question.errors[-1] for question in questions if question.scores is None]
        if errors:
            failure = f"judge output unusable after {len(outputs)} attempts: {'; '.join(errors)}"
            return JudgeScore(agent, None, failure=failure, attempts=len(outputs), raw_outputs=outputs)
        scores = {name: score for question in questions for name, score in (question.scores or {}).items()}
        return JudgeScore(agent, scores, attempts=len(outputs), raw_outputs=outputs)


def _dimension_scores(dimension: Dimension, text: str) -> dict[str, float]:
    return {dimension.name: parse_dimension_score(text, dimension)}


def _json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in `text` (prose and code fences around it are ignored)."""
    return next(json_objects(text, 50), None)


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
