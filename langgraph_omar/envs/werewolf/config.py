"""Werewolf game configuration: the roster, the phase cycle and the rule options, loaded from JSON or YAML.

Two layouts are accepted:

* SOTOPIA's two-file layout (`games_werewolves_config.json` + `games_werewolves_roster.json`): the config holds
  `description`, `role_goals`, `role_secrets`, `initial_state`, `state_transition`, `state_properties` and
  `end_conditions`; the roster holds `agents: [{name, role, team, agent_model}]`. Without an explicit
  `roster_path` the roster is looked up beside the config, with `config` replaced by `roster` in the file name.
* A self-contained file: the same keys plus `agents` and an optional `rules` object (see `WerewolfRules`).

Every key except `agents` is optional; missing ones get defaults built from the roster. The engine's semantics
for each phase are fixed (see `werewolf.rules`); `state_properties` is checked for consistency, and only the
witch's `internal_state` (initial potions) changes behaviour.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from langgraph_omar.envs.werewolf.options import WerewolfRules
from langgraph_omar.errors import OmarError

VILLAGER, WEREWOLF, SEER, WITCH, DOCTOR, GUARD = "Villager", "Werewolf", "Seer", "Witch", "Doctor", "Guard"
ROLES = (VILLAGER, WEREWOLF, SEER, WITCH, DOCTOR, GUARD)
UNIQUE_ROLES = (SEER, WITCH, DOCTOR, GUARD)
VILLAGERS_TEAM, WEREWOLVES_TEAM = "Villagers", "Werewolves"
TEAMS = (VILLAGERS_TEAM, WEREWOLVES_TEAM)

NIGHT_WEREWOLF, NIGHT_SEER, NIGHT_WITCH = "Night_werewolf", "Night_seer", "Night_witch"
NIGHT_DOCTOR, NIGHT_GUARD = "Night_doctor", "Night_guard"
DAY_DISCUSSION, DAY_VOTE = "Day_discussion", "Day_vote"
NIGHT_PHASE_ROLE = {
    NIGHT_WEREWOLF: WEREWOLF,
    NIGHT_GUARD: GUARD,
    NIGHT_DOCTOR: DOCTOR,
    NIGHT_SEER: SEER,
    NIGHT_WITCH: WITCH,
}
DAY_PHASES = (DAY_DISCUSSION, DAY_VOTE)
PHASES = (*NIGHT_PHASE_ROLE, *DAY_PHASES)
END_CONDITION_TYPES = ("team_eliminated", "parity")
MIN_PLAYERS = 3  # one werewolf and two others: the fewest the roles allow (werewolves start outnumbered)

DEFAULT_GOALS = {
    VILLAGER: "Work with the others in the open to find and exile the werewolves.",
    WEREWOLF: "Stay hidden, mislead the village and remove villagers until your pack matches them.",
    SEER: "Inspect one player each night and steer the village towards the werewolves without dying first.",
    WITCH: "Spend your one healing potion and your one poison where they help the village most.",
    DOCTOR: "Protect one player each night from the werewolves' attack.",
    GUARD: "Protect one player each night; you may not protect the same player two nights in a row.",
}
DEFAULT_END_MESSAGES = {
    "team_eliminated": "The village wins: every werewolf is gone.",
    "parity": "The werewolves win: they are now as many as everyone else.",
}
BUNDLED_DIR = Path(__file__).parent / "data"


class WerewolfConfigError(OmarError):
    """A Werewolf config or roster file that cannot be used; the message names the file and the key."""


def team_of(role: str) -> str:
    return WEREWOLVES_TEAM if role == WEREWOLF else VILLAGERS_TEAM


@dataclass(frozen=True)
class WerewolfConfig:
    """A validated Werewolf variant: who plays which role, in which phase order, under which rules."""

    players: tuple[str, ...]
    roles: Mapping[str, str]
    description: str
    role_goals: Mapping[str, str]
    role_secrets: Mapping[str, str]
    phase_cycle: tuple[str, ...]
    end_conditions: tuple[Mapping[str, str], ...]
    rules: WerewolfRules = field(default_factory=WerewolfRules)
    witch_save_available: bool = True
    witch_poison_available: bool = True
    source: str = "<memory>"

    def describe(self) -> str:
        """The rules text shown to every player, with the seating order filled in."""
        return self.description.replace("{agent_names}", ", ".join(self.players))


def bundled_config_path(name: str = "classic_6") -> Path:
    """Path of a config shipped with the package: classic_6, doctor_7, guard_8, guard_9."""
    path = BUNDLED_DIR / f"{name}.json"
    if not path.is_file():
        shipped = sorted(p.stem for p in BUNDLED_DIR.glob("*.json"))
        raise WerewolfConfigError(f"unknown bundled Werewolf config {name!r}: expected one of {shipped}")
    return path


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise WerewolfConfigError(f"{path}: cannot read: {err.strerror or err}") from err
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise WerewolfConfigError(f"{path}: expected a .json, .yaml or .yml file")
    except json.JSONDecodeError as err:
        raise WerewolfConfigError(f"{path}: line {err.lineno}: invalid JSON: {err.msg}") from err
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise WerewolfConfigError(f"{path}: {where}invalid YAML: {getattr(err, 'problem', err)}") from err
    if not isinstance(data, dict):
        raise WerewolfConfigError(f"{path}: expected an object at the top level, got {type(data).__name__}")
    return data


def _normalise_role(value: Any, where: str) -> str:
    by_lower = {role.lower(): role for role in ROLES}
    if not isinstance(value, str) or value.strip().lower() not in by_lower:
        raise WerewolfConfigError(f"{where}: unknown role {value!r}; expected one of {list(ROLES)}")
    return by_lower[value.strip().lower()]


def _parse_roster(agents: Any, where: str) -> tuple[tuple[str, ...], dict[str, str]]:
    if not isinstance(agents, list):
        raise WerewolfConfigError(f"{where}: agents: expected a list of {{name, role}} objects")
    names: list[str] = []
    roles: dict[str, str] = {}
    for index, agent in enumerate(agents):
        key = f"{where}: agents[{index}]"
        if not isinstance(agent, dict):
            raise WerewolfConfigError(f"{key}: expected an object with 'name' and 'role'")
        name = agent.get("name")
        if not isinstance(name, str) or not name.strip():
            raise WerewolfConfigError(f"{key}.name: expected a non-empty string, got {name!r}")
        name = name.strip()
        if name in roles:
            raise WerewolfConfigError(f"{key}.name: duplicate player name {name!r}")
        role = _normalise_role(agent.get("role"), f"{key}.role")
        team = agent.get("team")
        if team is not None and team != team_of(role):
            raise WerewolfConfigError(f"{key}.team: a {role} plays for {team_of(role)!r}, got {team!r}")
        names.append(name)
        roles[name] = role
    if len(names) < MIN_PLAYERS:
        raise WerewolfConfigError(
            f"{where}: agents: expected at least {MIN_PLAYERS} players, got {len(names)}"
        )
    wolves = sum(role == WEREWOLF for role in roles.values())
    if not 1 <= wolves < len(names) - wolves:
        raise WerewolfConfigError(
            f"{where}: agents: expected at least 1 werewolf and fewer werewolves than other players, got "
            f"{wolves} of {len(names)}"
        )
    for role in UNIQUE_ROLES:
        if sum(r == role for r in roles.values()) > 1:
            raise WerewolfConfigError(f"{where}: agents: expected at most one {role}")
    return tuple(names), roles


def _role_texts(data: dict[str, Any], key: str, where: str) -> dict[str, str]:
    raw = data.get(key, {})
    if not isinstance(raw, dict):
        raise WerewolfConfigError(f"{where}: {key}: expected an object mapping role to text")
    texts: dict[str, str] = {}
    for role_key, text in raw.items():
        role = _normalise_role(role_key, f"{where}: {key}")
        if not isinstance(text, str):
            raise WerewolfConfigError(f"{where}: {key}.{role_key}: expected a string, got {text!r}")
        texts[role] = text
    return texts


def _default_cycle(roles: Mapping[str, str]) -> tuple[str, ...]:
    present = set(roles.values())
    nights = [phase for phase, role in NIGHT_PHASE_ROLE.items() if role in present]
    return (*nights, *DAY_PHASES)


def _parse_cycle(data: dict[str, Any], roles: Mapping[str, str], where: str) -> tuple[str, ...]:
    if "state_transition" not in data:
        return _default_cycle(roles)
    transitions = data["state_transition"]
    if not isinstance(transitions, dict) or not transitions:
        raise WerewolfConfigError(
            f"{where}: state_transition: expected an object mapping phase to next phase"
        )
    for source, target in transitions.items():
        for name in (source, target):
            if name not in PHASES:
                raise WerewolfConfigError(
                    f"{where}: state_transition: unknown phase {name!r}; expected one of {list(PHASES)}"
                )
    start = data.get("initial_state", next(iter(transitions)))
    if start not in transitions:
        raise WerewolfConfigError(
            f"{where}: initial_state: expected a phase of state_transition, got {start!r}"
        )
    cycle = [start]
    while transitions[cycle[-1]] != start:
        nxt = transitions[cycle[-1]]
        if nxt in cycle or nxt not in transitions:
            raise WerewolfConfigError(
                f"{where}: state_transition: expected one cycle back to {start!r}, broken at {cycle[-1]!r}"
            )
        cycle.append(nxt)
    if len(cycle) != len(transitions):
        raise WerewolfConfigError(f"{where}: state_transition: phases outside the cycle from {start!r}")
    _check_cycle_shape(tuple(cycle), roles, where)
    return tuple(cycle)


def _check_cycle_shape(cycle: tuple[str, ...], roles: Mapping[str, str], where: str) -> None:
    if DAY_VOTE not in cycle or NIGHT_WEREWOLF not in cycle:
        raise WerewolfConfigError(f"{where}: state_transition: expected phases Night_werewolf and Day_vote")
    is_day = [phase in DAY_PHASES for phase in cycle]
    day_starts = sum(day and not is_day[i - 1] for i, day in enumerate(is_day))
    if day_starts != 1:
        raise WerewolfConfigError(f"{where}: state_transition: expected one block of night and one of day")
    if DAY_DISCUSSION in cycle and cycle.index(DAY_DISCUSSION) != (cycle.index(DAY_VOTE) - 1) % len(cycle):
        raise WerewolfConfigError(f"{where}: state_transition: expected Day_discussion right before Day_vote")
    first_night = next(i for i in range(len(cycle)) if not is_day[i] and is_day[i - 1])
    nights = [cycle[(first_night + k) % len(cycle)] for k in range(len(cycle) - is_day.count(True))]
    if NIGHT_WITCH in nights and nights.index(NIGHT_WITCH) < nights.index(NIGHT_WEREWOLF):
        raise WerewolfConfigError(f"{where}: state_transition: expected Night_witch after Night_werewolf")
    for role in set(roles.values()) - {VILLAGER}:
        phase = next(p for p, r in NIGHT_PHASE_ROLE.items() if r == role)
        if phase not in cycle:
            raise WerewolfConfigError(
                f"{where}: state_transition: the roster has a {role} but no {phase} phase"
            )


def _parse_state_properties(data: dict[str, Any], where: str) -> tuple[bool, bool]:
    """Check `state_properties` against the engine's fixed phase semantics; return the witch's potions."""
    properties = data.get("state_properties", {})
    if not isinstance(properties, dict):
        raise WerewolfConfigError(
            f"{where}: state_properties: expected an object mapping phase to properties"
        )
    save, poison = True, True
    for phase, props in properties.items():
        key = f"{where}: state_properties.{phase}"
        if phase not in PHASES:
            raise WerewolfConfigError(f"{key}: unknown phase; expected one of {list(PHASES)}")
        if not isinstance(props, dict):
            raise WerewolfConfigError(f"{key}: expected an object")
        acting = props.get("acting_roles")
        if acting is not None and phase in NIGHT_PHASE_ROLE:
            expected = NIGHT_PHASE_ROLE[phase]
            if not isinstance(acting, list) or [
                _normalise_role(r, f"{key}.acting_roles") for r in acting
            ] != [expected]:
                raise WerewolfConfigError(f"{key}.acting_roles: expected [{expected!r}], got {acting!r}")
        internal = props.get("internal_state", {})
        if not isinstance(internal, dict):
            raise WerewolfConfigError(f"{key}.internal_state: expected an object")
        if phase == NIGHT_WITCH:
            save = internal.get("save_available", True)
            poison = internal.get("poison_available", True)
            if not isinstance(save, bool) or not isinstance(poison, bool):
                raise WerewolfConfigError(f"{key}.internal_state: expected true/false potion flags")
    return save, poison


def _parse_end_conditions(data: dict[str, Any], where: str) -> tuple[dict[str, str], ...]:
    raw = data.get("end_conditions")
    if raw is None:
        return tuple({"type": kind, "message": message} for kind, message in DEFAULT_END_MESSAGES.items())
    if not isinstance(raw, list) or not raw:
        raise WerewolfConfigError(f"{where}: end_conditions: expected a non-empty list of objects")
    conditions = []
    for index, condition in enumerate(raw):
        key = f"{where}: end_conditions[{index}]"
        kind = condition.get("type") if isinstance(condition, dict) else None
        if kind not in END_CONDITION_TYPES:
            raise WerewolfConfigError(
                f"{key}.type: expected one of {list(END_CONDITION_TYPES)}, got {kind!r}"
            )
        assert isinstance(condition, dict)
        expected_winner = VILLAGERS_TEAM if kind == "team_eliminated" else WEREWOLVES_TEAM
        if condition.get("winner", expected_winner) != expected_winner:
            raise WerewolfConfigError(f"{key}.winner: a {kind} condition is won by {expected_winner!r}")
        message = condition.get("message", DEFAULT_END_MESSAGES[kind])
        if not isinstance(message, str):
            raise WerewolfConfigError(f"{key}.message: expected a string")
        conditions.append({"type": kind, "message": message})
    if {c["type"] for c in conditions} != set(END_CONDITION_TYPES):
        raise WerewolfConfigError(f"{where}: end_conditions: expected both {list(END_CONDITION_TYPES)}")
    return tuple(conditions)


def _parse_rules(raw: Any, where: str) -> WerewolfRules:
    if not isinstance(raw, dict):
        raise WerewolfConfigError(f"{where}: rules: expected an object")
    known = {f.name for f in fields(WerewolfRules)}
    for key in raw:
        if key not in known:
            raise WerewolfConfigError(f"{where}: rules.{key}: unknown rule; expected one of {sorted(known)}")
    try:
        return WerewolfRules(**raw)
    except ValueError as err:
        raise WerewolfConfigError(f"{where}: rules.{err}") from err


def _default_description(roles: Mapping[str, str]) -> str:
    counts = {role: sum(r == role for r in roles.values()) for role in ROLES}
    roster = ", ".join(f"{n} {role.lower()}{'s' if n > 1 else ''}" for role, n in counts.items() if n)
    return (
        f"Werewolf, a game of hidden roles for {len(roles)} players: {roster}. Each round has a night, when "
        "the werewolves secretly pick a victim and the special roles act in private, and a day, when everyone "
        "alive hears who died, talks in turn and votes to exile one suspect. The village wins when no werewolf "
        "is left; the werewolves win when they are as many as everyone else. Players in seating order: "
        "{agent_names}."
    )


def load_werewolf_config(
    config_path: str | Path | None = None,
    roster_path: str | Path | None = None,
    *,
    rules: Mapping[str, Any] | None = None,
) -> WerewolfConfig:
    """Load and validate a Werewolf variant.

    config_path: a JSON/YAML config (None: the bundled `classic_6`). roster_path: the roster file, when the
    config has no `agents` key (default: the config's file name with `config` replaced by `roster`).
    rules: rule options overriding the file's `rules` object (same keys as `WerewolfRules`).
    Raises `WerewolfConfigError` (one line naming the file and the key) on any problem.
    """
    path = Path(config_path) if config_path is not None else bundled_config_path()
    data = _read_mapping(path)
    where = str(path)
    if "agents" in data and roster_path is None:
        names, roles = _parse_roster(data["agents"], where)
    else:
        if roster_path is None:
            if "config" not in path.name:
                raise WerewolfConfigError(f"{where}: agents: missing, and no roster_path was given")
            roster_path = path.with_name(path.name.replace("config", "roster"))
        roster_file = Path(roster_path)
        if not roster_file.is_file():
            raise WerewolfConfigError(
                f"{where}: agents: missing, and the roster file {roster_file} does not exist"
            )
        roster = _read_mapping(roster_file)
        if "agents" not in roster:
            raise WerewolfConfigError(
                f"{roster_file}: agents: missing; expected a list of {{name, role}} objects"
            )
        names, roles = _parse_roster(roster["agents"], str(roster_file))
    description = data.get("description", _default_description(roles))
    if not isinstance(description, str):
        raise WerewolfConfigError(f"{where}: description: expected a string")
    goals = {**DEFAULT_GOALS, **_role_texts(data, "role_goals", where)}
    secrets = _role_texts(data, "role_secrets", where)
    cycle = _parse_cycle(data, roles, where)
    save, poison = _parse_state_properties(data, where)
    end_conditions = _parse_end_conditions(data, where)
    file_rules = data.get("rules", {})
    if rules and isinstance(file_rules, dict):
        file_rules = {**file_rules, **rules}
    parsed_rules = _parse_rules(file_rules, where)
    return WerewolfConfig(
        players=names,
        roles=roles,
        description=description,
        role_goals=goals,
        role_secrets=secrets,
        phase_cycle=cycle,
        end_conditions=end_conditions,
        rules=parsed_rules,
        witch_save_available=save,
        witch_poison_available=poison,
        source=where,
    )
