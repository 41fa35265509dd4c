"""SOTOPIA's rules: who sees what, the five action types and their parser, and when an episode ends.

Visibility (after SOTOPIA's relationship-dependent character sheets):
- Each agent sees the scenario (without `<p viewer="environment">` blocks), its own full character sheet,
  its own secret and its own goal (with its `<extra_info>` and, if `hints`, its hints).
- Of the other agent it sees the name always, and more the closer they are: nothing else for strangers (0)
  and those who only know each other's name (1); age, gender, occupation, pronouns and public info for
  acquaintances (2); personality and values too for friends, partners and family (3-5). Never the other's
  goal, secret or decision-making style.
- The relationship's background story is shown to the judge only: in SOTOPIA's data it may mention secrets.
- The judge (the "environment" viewer) sees everything.

Actions: speak, non-verbal communication, action (physical), leave, none. The parser reads a leading tag
(`[speak] Hi`, `Action: opens the door`, `<leave>`, `none`) or SOTOPIA's JSON
(`{"action_type": "speak", "argument": "Hi"}`); anything else is spoken as is (fallback `no_action_tag`);
blank output is `none` (fallback `empty_output`). It never raises.

An episode ends after `max_turns` turns, when an agent leaves, or after `max_stale_turns` consecutive turns in
which nothing was done (`none`), whichever comes first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from langgraph_omar.envs.sotopia.data import (
    ENVIRONMENT_VIEWER,
    RELATIONSHIP_NAMES,
    SotopiaAgent,
    SotopiaEpisode,
    render_for_viewer,
)

SotopiaActionType = Literal["none", "speak", "non-verbal communication", "action", "leave"]
ACTION_TYPES: tuple[str, ...] = ("none", "speak", "non-verbal communication", "action", "leave")

_TYPE_ALIASES: dict[str, SotopiaActionType] = {
    "speak": "speak",
    "say": "speak",
    "says": "speak",
    "talk": "speak",
    "non verbal communication": "non-verbal communication",
    "nonverbal communication": "non-verbal communication",
    "non verbal": "non-verbal communication",
    "nonverbal": "non-verbal communication",
    "gesture": "non-verbal communication",
    "action": "action",
    "physical action": "action",
    "act": "action",
    "leave": "leave",
    "leaves": "leave",
    "none": "none",
    "nothing": "none",
    "no action": "none",
}
_LEADING_TAG = re.compile(
    r"^\s*(?:[\[(<{]\s*)?(?P<tag>[A-Za-z][A-Za-z _-]{0,30}?)\s*(?:[\])>}]\s*:?|:|$)(?P<arg>.*)$", re.DOTALL
)
_MAX_JSON_STARTS = 20  # '{' positions tried for a JSON action (bounds the parser's work on long outputs)

_RELATIONSHIP_PHRASES = {
    0: "are strangers",
    1: "know each other by name only",
    2: "are acquaintances",
    3: "are friends",
    4: "are in a romantic relationship",
    5: "are family members",
}


@dataclass(frozen=True)
class SotopiaRules:
    """When an episode ends and what agents are shown. Every field has help text in `metadata['help']`."""

    max_turns: int = field(
        default=20, metadata={"help": "turns in total (both agents) before the episode ends"}
    )
    max_stale_turns: int = field(
        default=2, metadata={"help": "consecutive turns with action 'none' that end the episode"}
    )
    hints: bool = field(
        default=True,
        metadata={"help": "show agents the <strategy_hint>/<clarification_hint> parts of their goal"},
    )

    def __post_init__(self) -> None:
        if self.max_turns < 1:
            raise ValueError(f"SotopiaRules.max_turns must be >= 1, got {self.max_turns}")
        if self.max_stale_turns < 1:
            raise ValueError(f"SotopiaRules.max_stale_turns must be >= 1, got {self.max_stale_turns}")


@dataclass(frozen=True)
class SotopiaAction:
    """A parsed action; `fallback` says why the text was not used as written (None when it was)."""

    type: SotopiaActionType
    argument: str = ""
    fallback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_sotopia_action(text: str) -> SotopiaAction:
    """The action in a model's output (see the module docstring for the accepted forms)."""
    if not text.strip():
        return SotopiaAction("none", fallback="empty_output")
    from_json = _from_json(text)
    if from_json is not None:
        return from_json
    match = _LEADING_TAG.match(text)
    if match is not None:
        action_type = _TYPE_ALIASES.get(_normalise(match.group("tag")))
        if action_type is not None:
            argument = _strip_closing_tag(match.group("arg")).strip()
            if action_type in ("speak", "non-verbal communication", "action") and not argument:
                return SotopiaAction("none", fallback="empty_argument")
            return SotopiaAction(action_type, argument if action_type != "none" else "")
    return SotopiaAction("speak", text.strip(), fallback="no_action_tag")


def _normalise(tag: str) -> str:
    return re.sub(r"\s+", " ", tag.replace("_", " ").replace("-", " ")).strip().lower()


def _strip_closing_tag(argument: str) -> str:
    return re.sub(r"\s*</[A-Za-z _-]{1,32}>\s*$", "", argument)


def _from_json(text: str) -> SotopiaAction | None:
    if "action_type" not in text:
        return None
    for value in json_objects(text, _MAX_JSON_STARTS):
        if "action_type" not in value:
            continue
        action_type = _TYPE_ALIASES.get(_normalise(str(value["action_type"])))
        if action_type is None:
            return SotopiaAction("speak", text.strip(), fallback="unknown_action_type")
        argument = value.get("argument", "")
        argument = argument.strip() if isinstance(argument, str) else json.dumps(argument)
        if action_type in ("speak", "non-verbal communication", "action") and not argument:
            return SotopiaAction("none", fallback="empty_argument")
        return SotopiaAction(action_type, argument if action_type != "none" else "")
    return None


def json_objects(text: str, max_starts: int) -> Iterator[dict[str, Any]]:
    """The JSON objects that start at the first `max_starts` '{' of `text` (prose around them is ignored).

    Never raises on model output: a start that does not decode (bad JSON, nesting too deep) is skipped, and
    an integer too long for Python (`int` refuses more than 4300 digits, `float(int)` overflows past 308) is
    read as a float, infinity beyond 1e308, which no range check accepts.
    """
    decoder = json.JSONDecoder(parse_int=_parse_int)
    starts = [i for i, char in enumerate(text) if char == "{"][:max_starts]
    for start in starts:
        try:
            value, _ = decoder.raw_decode(text, start)
        except (ValueError, RecursionError):  # ValueError: JSONDecodeError and its other decoding errors
            continue
        if isinstance(value, dict):
            yield value


def _parse_int(digits: str) -> int | float:
    return int(digits) if len(digits) <= 300 else float(digits)


def stop_reason(turns: Sequence[tuple[str, str]], rules: SotopiaRules) -> str | None:
    """Why an episode with these (role, action type) turns so far is over, or None if it goes on.

    "left:ROLE" when an agent left; "silence" after `max_stale_turns` trailing `none` turns; "max_turns".
    """
    for role, action_type in turns:
        if action_type == "leave":
            return f"left:{role}"
    stale = 0
    for _, action_type in reversed(turns):
        if action_type != "none":
            break
        stale += 1
    if stale >= rules.max_stale_turns:
        return "silence"
    if len(turns) >= rules.max_turns:
        return "max_turns"
    return None


def describe_action(name: str, action_type: str, argument: str) -> str:
    """One transcript line in SOTOPIA's style, e.g. `Lena said: "Hi"`, `Lena [action] opens the door`."""
    if action_type == "speak":
        return f'{name} said: "{argument}"'
    if action_type in ("non-verbal communication", "action"):
        return f"{name} [{action_type}] {argument}"
    if action_type == "leave":
        return f"{name} left the conversation"
    return f"{name} did nothing"


# ---- who sees what -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentView:
    """What agent `name` is told at the start of an episode."""

    name: str
    persona: str  # who the agent is (its own full character sheet)
    goal: str  # its own goal, tags rendered for it
    private_info: tuple[str, ...]  # its secret
    description: str  # the scenario, the participants and what it knows of the other


def agent_viewer(index: int) -> str:
    """The viewer name of agent `index` (0 or 1) in `<p viewer=...>` blocks: "agent_1" or "agent_2"."""
    return f"agent_{index + 1}"


def character_sheet(agent: SotopiaAgent) -> str:
    """An agent's full profile except its secret (its own view, and the judge's)."""
    return (
        f"{agent.name} is a {agent.age}-year-old {agent.gender.lower()} {agent.occupation.lower()} "
        f"({agent.gender_pronoun} pronouns). {agent.public_info} "
        f"Personality and values: {agent.personality_and_values} "
        f"Decision-making style: {agent.decision_making_style}."
    )


def visible_sheet(agent: SotopiaAgent, relationship_level: int) -> str:
    """What someone at `relationship_level` (0-5) to `agent` knows of it (never its secret)."""
    if relationship_level <= 1:
        return f"{agent.name}: you know nothing else about them."
    known = (
        f"{agent.name} is a {agent.age}-year-old {agent.gender.lower()} {agent.occupation.lower()} "
        f"({agent.gender_pronoun} pronouns). {agent.public_info}"
    )
    if relationship_level >= 3:
        known += f" Personality and values: {agent.personality_and_values}"
    return known


def agent_view(episode: SotopiaEpisode, index: int, rules: SotopiaRules | None = None) -> AgentView:
    """What agent `index` (0 or 1) of `episode` sees; never the other agent's goal or secret."""
    if index not in (0, 1):
        raise ValueError(f"agent index must be 0 or 1, got {index}")
    rules = rules or SotopiaRules()
    me, other = episode.agents[index], episode.agents[1 - index]
    viewer = agent_viewer(index)
    level = episode.relationship_level
    scenario = render_for_viewer(episode.environment.scenario, viewer)
    description = (
        f"Scenario: {scenario}\n"
        f"Participants: {episode.agents[0].name} and {episode.agents[1].name}. "
        f"You and {other.name} {_RELATIONSHIP_PHRASES[level]}.\n"
        f"What you know about {other.name}: {visible_sheet(other, level)}"
    )
    return AgentView(
        name=me.name,
        persona=f"You are {me.name}. {character_sheet(me)}",
        goal=render_for_viewer(episode.environment.agent_goals[index], viewer, hints=rules.hints),
        private_info=(f"Your secret: {me.secret}",) if me.secret.strip() else (),
        description=description,
    )


def environment_view(episode: SotopiaEpisode) -> str:
    """The judge's context: the whole scenario, both full sheets and secrets, both goals, the relationship."""
    environment = episode.environment
    lines = [
        f"Scenario: {render_for_viewer(environment.scenario, ENVIRONMENT_VIEWER)}",
        f"Relationship: {RELATIONSHIP_NAMES[episode.relationship_level]}.",
    ]
    if episode.relationship is not None:
        lines.append(f"Their history: {episode.relationship.background_story}")
    for index, agent in enumerate(episode.agents):
        goal = render_for_viewer(environment.agent_goals[index], ENVIRONMENT_VIEWER)
        lines += [
            f"{agent.name}'s background: {character_sheet(agent)} Secret: {agent.secret}",
            f"{agent.name}'s goal: {goal}",
        ]
    return "\n".join(lines)
