"""Load SOTOPIA's scenario files: environments, characters, relationships and the benchmark's episodes.

A SOTOPIA folder holds (the format of sotopia-lab's `profiles/*.jsonl` dumps):
- `environment_profiles.jsonl`: `env_id`, `codename`, `source`, `scenario`, `agent_goals` (two strings),
  `relationship` (0-5), and constraint fields;
- `agent_profiles.jsonl`: `agent_id`, names, `age`, `occupation`, `gender`, `gender_pronoun`, `public_info`,
  `big_five`, `moral_values`, `schwartz_personal_values`, `personality_and_values`, `decision_making_style`,
  `secret`, `mbti`;
- `relationship_profiles.jsonl`: `relationship_id`, `agent1_id`, `agent2_id`, `relationship`,
  `background_story`;
- `env_agent_combo_storages.jsonl`: `combo_id`, `env_id`, `agent_ids` (two): one benchmark episode each;
- optionally `sotopia_hard_env_ids.json`: `{"sotopia_hard_env_id": [env ids...]}` (the SOTOPIA-hard subset).
An id key may also be spelled `pk` (SOTOPIA's redis dumps). Unknown keys are ignored. A pair of characters
with several relationship profiles gets, in each episode, the profile whose level the environment asks for.

Embedded tags and who sees them (`render_for_viewer`):
- `<extra_info>...</extra_info>`: facts for the goal's owner: the text is kept, the tags removed.
- `<strategy_hint>`, `<clarification_hint>`: hints for the goal's owner: kept (tags removed) when
  `hints=True`, dropped with their text when `hints=False`.
- `<p viewer="V">...</p>`: only viewer V sees the text. The "environment" viewer (the judge) sees every block.
Other tags are left untouched, so nothing is lost silently. Agents never see another agent's goal at all;
that is the environment's rule (`langgraph_omar.envs.sotopia`), not the renderer's.

Every problem in a file is a `SotopiaDataError` whose one-line message names the file, the line and the key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from langgraph_omar.errors import OmarError

ENVIRONMENTS_FILE = "environment_profiles.jsonl"
AGENTS_FILE = "agent_profiles.jsonl"
RELATIONSHIPS_FILE = "relationship_profiles.jsonl"
COMBOS_FILE = "env_agent_combo_storages.jsonl"
HARD_IDS_FILE = "sotopia_hard_env_ids.json"
HARD_IDS_KEY = "sotopia_hard_env_id"

# SOTOPIA's RelationshipType: what two characters are to each other.
RELATIONSHIP_NAMES: dict[int, str] = {
    0: "stranger",
    1: "know_by_name",
    2: "acquaintance",
    3: "friend",
    4: "romantic_relationship",
    5: "family_member",
}
ENVIRONMENT_VIEWER = "environment"

_HINT_TAGS = ("strategy_hint", "clarification_hint")
_P_BLOCK = re.compile(r"<p\s+viewer\s*=\s*[\"']([^\"']*)[\"']\s*>(.*?)</p>", re.DOTALL)


class SotopiaDataError(OmarError):
    """A SOTOPIA file that does not have the expected content (the message names file, line and key)."""


@dataclass(frozen=True)
class SotopiaAgent:
    """A character profile."""

    agent_id: str
    first_name: str
    last_name: str
    age: int
    occupation: str
    gender: str
    gender_pronoun: str
    public_info: str
    big_five: str
    moral_values: tuple[str, ...]
    schwartz_personal_values: tuple[str, ...]
    personality_and_values: str
    decision_making_style: str
    secret: str
    mbti: str

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


@dataclass(frozen=True)
class SotopiaEnvironment:
    """A scenario with one social goal per agent. `scenario` and `agent_goals` keep their raw tags."""

    env_id: str
    codename: str
    source: str
    scenario: str
    agent_goals: tuple[str, str]
    relationship: int
    age_constraint: str | None = None
    occupation_constraint: str | None = None
    agent_constraint: str | None = None


@dataclass(frozen=True)
class SotopiaRelationship:
    """What two characters are to each other (0-5, see RELATIONSHIP_NAMES) and their shared history."""

    relationship_id: str
    agent1_id: str
    agent2_id: str
    relationship: int
    background_story: str


@dataclass(frozen=True)
class SotopiaEpisode:
    """One benchmark episode: an environment and the two characters who play it (agent i has goal i)."""

    combo_id: str
    environment: SotopiaEnvironment
    agents: tuple[SotopiaAgent, SotopiaAgent]
    relationship: SotopiaRelationship | None = None
    hard: bool = False

    @property
    def relationship_level(self) -> int:
        """The pair's relationship from its profile when there is one, else the environment's requirement."""
        if self.relationship is not None:
            return self.relationship.relationship
        return self.environment.relationship


@dataclass(frozen=True)
class SotopiaData:
    """Everything in one SOTOPIA folder, cross-checked."""

    environments: dict[str, SotopiaEnvironment]
    agents: dict[str, SotopiaAgent]
    relationships: dict[frozenset[str], tuple[SotopiaRelationship, ...]]  # some pairs have several profiles
    episodes: tuple[SotopiaEpisode, ...]
    hard_env_ids: frozenset[str] = field(default_factory=frozenset)

    def hard_episodes(self) -> tuple[SotopiaEpisode, ...]:
        """The SOTOPIA-hard subset: episodes whose environment is in the hard list."""
        return tuple(episode for episode in self.episodes if episode.hard)

    def episode(self, combo_id: str) -> SotopiaEpisode:
        for episode in self.episodes:
            if episode.combo_id == combo_id:
                return episode
        raise KeyError(f"no SOTOPIA episode with combo_id {combo_id!r}")


def render_for_viewer(text: str, viewer: str, *, hints: bool = True) -> str:
    """`text` as `viewer` sees it ("environment" or an agent's viewer name); see the module docstring."""

    def keep_block(match: re.Match[str]) -> str:
        return match.group(2) if viewer in (ENVIRONMENT_VIEWER, match.group(1)) else ""

    rendered = _P_BLOCK.sub(keep_block, text)
    rendered = re.sub(r"</?extra_info>", "", rendered)
    for tag in _HINT_TAGS:
        if hints:
            rendered = re.sub(rf"</?{tag}>", "", rendered)
        else:
            rendered = re.sub(rf"<{tag}>.*?</{tag}>", "", rendered, flags=re.DOTALL)
    rendered = re.sub(r"\(\s*\)", "", rendered)  # a goal whose only parenthesised part was a dropped hint
    rendered = re.sub(r"\(\s+", "(", re.sub(r"\s+\)", ")", rendered))
    return re.sub(r"[ \t]{2,}", " ", rendered).strip()


def load_sotopia(path_dir: str | Path) -> SotopiaData:
    """Read and cross-check a SOTOPIA folder (file names in the module docstring)."""
    folder = Path(path_dir)
    if not folder.is_dir():
        raise SotopiaDataError(
            f"{folder}: not a folder; expected a SOTOPIA folder with {ENVIRONMENTS_FILE} etc."
        )
    environments = _index(folder / ENVIRONMENTS_FILE, _environment, "env_id")
    agents = _index(folder / AGENTS_FILE, _agent, "agent_id")
    relationships: dict[frozenset[str], tuple[SotopiaRelationship, ...]] = {}
    for _, relation in _records(folder / RELATIONSHIPS_FILE, _relationship):
        pair = frozenset((relation.agent1_id, relation.agent2_id))
        relationships[pair] = (*relationships.get(pair, ()), relation)
    hard_ids = _hard_env_ids(folder / HARD_IDS_FILE, environments)
    episodes = []
    combos_path = folder / COMBOS_FILE
    for line_number, raw in _json_lines(combos_path):
        where = _Where(combos_path, line_number)
        combo_id = where.text(raw, "combo_id", aliases=("pk",))
        env_id = where.text(raw, "env_id")
        agent_ids = where.text_list(raw, "agent_ids", length=2)
        if env_id not in environments:
            raise where.error("env_id", f"unknown environment {env_id!r} (not in {ENVIRONMENTS_FILE})")
        for agent_id in agent_ids:
            if agent_id not in agents:
                raise where.error("agent_ids", f"unknown agent {agent_id!r} (not in {AGENTS_FILE})")
        episodes.append(
            SotopiaEpisode(
                combo_id=combo_id,
                environment=environments[env_id],
                agents=(agents[agent_ids[0]], agents[agent_ids[1]]),
                relationship=_pair_relationship(
                    relationships.get(frozenset(agent_ids), ()), environments[env_id]
                ),
                hard=env_id in hard_ids,
            )
        )
    return SotopiaData(environments, agents, relationships, tuple(episodes), hard_ids)


def builtin_sotopia_dir() -> Path:
    """The folder of the project's own small SOTOPIA-format scenarios."""
    return Path(__file__).parent / "bundled"


def load_builtin_sotopia() -> SotopiaData:
    """The project's own scenarios (written for this project, in SOTOPIA's format)."""
    return load_sotopia(builtin_sotopia_dir())


# ---- file reading -------------------------------------------------------------------------------------------

_T = TypeVar("_T")


@dataclass(frozen=True)
class _Where:
    """A position in a file, for one-line error messages and typed field access."""

    path: Path
    line: int

    def error(self, key: str, problem: str) -> SotopiaDataError:
        return SotopiaDataError(f"{self.path}:{self.line}: key {key!r}: {problem}")

    def value(self, raw: Mapping[str, Any], key: str, aliases: tuple[str, ...] = ()) -> Any:
        for name in (key, *aliases):
            if name in raw:
                return raw[name]
        raise self.error(key, "missing")

    def text(self, raw: Mapping[str, Any], key: str, aliases: tuple[str, ...] = ()) -> str:
        value = self.value(raw, key, aliases)
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {type(value).__name__}")
        return value

    def optional_text(self, raw: Mapping[str, Any], key: str) -> str | None:
        value = raw.get(key)
        if value is None or value in ("nan", "none", ""):
            return None
        return str(value)

    def integer(
        self, raw: Mapping[str, Any], key: str, low: int | None = None, high: int | None = None
    ) -> int:
        value = self.value(raw, key)
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise self.error(key, f"expected an integer, got {value!r}") from None
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise self.error(key, f"expected an integer, got {value!r}")
        if (low is not None and number < low) or (high is not None and number > high):
            raise self.error(key, f"expected an integer in [{low}, {high}], got {value!r}")
        return number

    def text_list(self, raw: Mapping[str, Any], key: str, length: int | None = None) -> list[str]:
        value = self.value(raw, key)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.error(key, f"expected a list of strings, got {type(value).__name__}")
        if length is not None and len(value) != length:
            raise self.error(key, f"expected {length} strings, got {len(value)}")
        return value


def _json_lines(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    if not path.is_file():
        raise SotopiaDataError(f"{path}: file not found; expected a SOTOPIA JSONL file")
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as error:
                raise SotopiaDataError(f"{path}:{line_number}: not valid JSON ({error.msg})") from None
            if not isinstance(raw, dict):
                raise SotopiaDataError(
                    f"{path}:{line_number}: expected a JSON object, got {type(raw).__name__}"
                )
            yield line_number, raw


def _records(path: Path, parse: Callable[[_Where, Mapping[str, Any]], _T]) -> Iterator[tuple[_Where, _T]]:
    for line_number, raw in _json_lines(path):
        where = _Where(path, line_number)
        yield where, parse(where, raw)


def _index(path: Path, parse: Callable[[_Where, Mapping[str, Any]], _T], id_key: str) -> dict[str, _T]:
    index: dict[str, _T] = {}
    for where, record in _records(path, parse):
        record_id = getattr(record, id_key)
        if record_id in index:
            raise where.error(id_key, f"duplicate id {record_id!r}")
        index[record_id] = record
    return index


def _environment(where: _Where, raw: Mapping[str, Any]) -> SotopiaEnvironment:
    goals = where.text_list(raw, "agent_goals", length=2)
    return SotopiaEnvironment(
        env_id=where.text(raw, "env_id", aliases=("pk",)),
        codename=where.text(raw, "codename"),
        source=str(raw.get("source", "")),
        scenario=where.text(raw, "scenario"),
        agent_goals=(goals[0], goals[1]),
        relationship=where.integer(raw, "relationship", 0, 5),
        age_constraint=where.optional_text(raw, "age_constraint"),
        occupation_constraint=where.optional_text(raw, "occupation_constraint"),
        agent_constraint=where.optional_text(raw, "agent_constraint"),
    )


def _agent(where: _Where, raw: Mapping[str, Any]) -> SotopiaAgent:
    def values(key: str) -> tuple[str, ...]:
        return tuple(item.strip() for item in where.text_list(raw, key))

    return SotopiaAgent(
        agent_id=where.text(raw, "agent_id", aliases=("pk",)),
        first_name=where.text(raw, "first_name"),
        last_name=where.text(raw, "last_name"),
        age=where.integer(raw, "age", 0, 150),
        occupation=where.text(raw, "occupation"),
        gender=where.text(raw, "gender"),
        gender_pronoun=where.text(raw, "gender_pronoun"),
        public_info=where.text(raw, "public_info"),
        big_five=where.text(raw, "big_five"),
        moral_values=values("moral_values"),
        schwartz_personal_values=values("schwartz_personal_values"),
        personality_and_values=where.text(raw, "personality_and_values"),
        decision_making_style=where.text(raw, "decision_making_style"),
        secret=where.text(raw, "secret"),
        mbti=where.text(raw, "mbti"),
    )


def _relationship(where: _Where, raw: Mapping[str, Any]) -> SotopiaRelationship:
    return SotopiaRelationship(
        relationship_id=where.text(raw, "relationship_id", aliases=("pk",)),
        agent1_id=where.text(raw, "agent1_id"),
        agent2_id=where.text(raw, "agent2_id"),
        relationship=where.integer(raw, "relationship", 0, 5),
        background_story=where.text(raw, "background_story"),
    )


def _pair_relationship(
    profiles: tuple[SotopiaRelationship, ...], environment: SotopiaEnvironment
) -> SotopiaRelationship | None:
    """A pair's profile; when the pair has several (the SOTOPIA dump has two such pairs), the first whose level
    is the one the environment asks for, else the first."""
    matching = [profile for profile in profiles if profile.relationship == environment.relationship]
    candidates = matching or list(profiles)
    return candidates[0] if candidates else None


def _hard_env_ids(path: Path, environments: Mapping[str, SotopiaEnvironment]) -> frozenset[str]:
    if not path.exists():
        return frozenset()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise SotopiaDataError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(raw, dict) or HARD_IDS_KEY not in raw:
        raise SotopiaDataError(
            f"{path}: key {HARD_IDS_KEY!r}: missing; expected a JSON object with a list of env ids"
        )
    ids = raw[HARD_IDS_KEY]
    if not isinstance(ids, list) or not all(isinstance(env_id, str) for env_id in ids):
        raise SotopiaDataError(f"{path}: key {HARD_IDS_KEY!r}: expected a list of env id strings")
    unknown = [env_id for env_id in ids if env_id not in environments]
    if unknown:
        raise SotopiaDataError(f"{path}: key {HARD_IDS_KEY!r}: unknown environment ids {unknown[:3]}")
    return frozenset(ids)
