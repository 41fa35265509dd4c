"""The Werewolf rules engine: pure functions from a state (and the config) to a state update. No model here.

A game is a cycle of phases from the config. Entering a phase plans its groups of players (`Task`s: who acts,
on what kind of decision); each group acts together (same context, so a batching engine sees the calls at once)
and is then resolved. Crossing from night to day runs `dawn`: the night's deaths and the win check.

Night semantics: the werewolves chat privately, then each names a victim (most votes win; a tie follows
`werewolf_disagreement`). The doctor's or guard's protection, and the witch's save, stop the werewolves' attack
but not the poison. The witch learns the victim, plays one command per night, and each potion once per game.
Day: everybody alive speaks in seating order for `discussion_rounds` rounds, then votes at once; the most votes
exile (a tie follows `vote_tie`; under `exile: majority` only votes from more than half of the living exile).
Win checks run after dawn and after the vote, in the config's order.
A game still running after `max_rounds` cycles is a draw (winner None).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from langgraph_omar.envs.werewolf import actions as act
from langgraph_omar.envs.werewolf.config import (
    DAY_DISCUSSION,
    DAY_PHASES,
    DOCTOR,
    GUARD,
    NIGHT_PHASE_ROLE,
    NIGHT_WEREWOLF,
    NIGHT_WITCH,
    SEER,
    VILLAGERS_TEAM,
    WEREWOLF,
    WEREWOLVES_TEAM,
    WITCH,
    WerewolfConfig,
)
from langgraph_omar.envs.werewolf.rewards import finish
from langgraph_omar.envs.werewolf.state import (
    ActionRecord,
    Fallback,
    NightLog,
    NightRecord,
    Observation,
    Task,
    WerewolfState,
    apply_update,
    combine_updates,
    make_event,
    observe,
)

Update = dict[str, Any]
CAUSE_TEXT = {"werewolves": "was killed during the night", "poison": "was found dead", "vote": "was exiled"}


def _rng(seed: int, *parts: object) -> random.Random:
    # String seeds are hashed deterministically (unlike hash()), so runs are reproducible across processes.
    return random.Random("/".join(str(p) for p in (seed, *parts)))


def _empty_night() -> NightRecord:
    return NightRecord(wolf_target=None, doctor_target=None, guard_target=None, saved=False, poisoned=None)


def new_game(config: WerewolfConfig, seed: int = 0) -> WerewolfState:
    """The state before the first phase; roles are dealt anew from `seed` when `rules.shuffle_roles`."""
    players = list(config.players)
    dealt = [config.roles[p] for p in players]
    if config.rules.shuffle_roles:
        _rng(seed, "roles").shuffle(dealt)
    state = WerewolfState(
        seed=seed,
        players=players,
        roles=dict(zip(players, dealt, strict=True)),
        alive=list(players),
        round=0,
        phase="",
        step=0,
        pending=[],
        current=None,
        witch_save_available=config.witch_save_available,
        witch_poison_available=config.witch_poison_available,
        guard_last_target=None,
        night=_empty_night(),
        nights=[],
        eliminated={},
        events=[],
        actions=[],
        fallbacks=[],
        finished=False,
        winner=None,
    )
    state["events"] = [make_event(state, f"The game begins. Players in seating order: {', '.join(players)}.")]
    return state


def _holder(state: WerewolfState, role: str) -> str | None:
    """The living player with a unique role, if any."""
    return next((p for p in state["alive"] if state["roles"][p] == role), None)


def _wolves(state: WerewolfState) -> list[str]:
    return [p for p in state["alive"] if state["roles"][p] == WEREWOLF]


def legal_moves(state: WerewolfState, config: WerewolfConfig, player: str, kind: str) -> dict[str, list[str]]:
    """verb -> allowed targets for `player` now (no-target verbs map to []); {} for chat turns."""
    rules, alive = config.rules, state["alive"]
    others = [p for p in alive if p != player]
    if kind == "kill":
        return {act.KILL: [p for p in alive if state["roles"][p] != WEREWOLF]}
    if kind == "inspect":
        return {act.INSPECT: others}
    if kind == "witch":
        moves: dict[str, list[str]] = {act.PASS: []}
        victim = state["night"]["wolf_target"]
        if state["witch_save_available"] and victim and (victim != player or rules.witch_can_self_save):
            moves[act.SAVE] = [victim]
        if state["witch_poison_available"]:
            moves[act.POISON] = others
        return moves
    if kind == "protect":
        if state["roles"][player] == GUARD:
            allowed = alive if rules.guard_can_self_protect else others
            return {act.PROTECT: [p for p in allowed if p != state["guard_last_target"]]}
        return {act.PROTECT: alive if rules.doctor_can_self_protect else others}
    if kind == "vote":
        return {act.VOTE: others, act.ABSTAIN: []}
    return {}


def observe_task(state: WerewolfState, config: WerewolfConfig, player: str) -> Observation:
    """The observation of `player` for the group now acting (state['current'])."""
    current = state.get("current")
    kind = current["kind"] if current is not None else act.SPEAK
    return observe(state, config, player, kind, legal_moves(state, config, player, kind))


def _plan(state: WerewolfState, config: WerewolfConfig, phase: str) -> list[Task]:
    def task(kind: str, players: list[str]) -> Task:
        return Task(kind=kind, players=players, step=0)

    if phase == NIGHT_WEREWOLF:
        wolves = _wolves(state)
        chat_rounds = config.rules.werewolf_discussion_rounds if len(wolves) > 1 else 0
        return [task(act.WOLF_CHAT, [w]) for _ in range(chat_rounds) for w in wolves] + [task("kill", wolves)]
    if phase in NIGHT_PHASE_ROLE:
        role = NIGHT_PHASE_ROLE[phase]
        holder = _holder(state, role)
        if holder is None:
            return []
        if role == WITCH and not (state["witch_save_available"] or state["witch_poison_available"]):
            return []
        kind = {SEER: "inspect", WITCH: "witch", DOCTOR: "protect", GUARD: "protect"}[role]
        return [task(kind, [holder])]
    if phase == DAY_DISCUSSION:
        return [task(act.SPEAK, [p]) for _ in range(config.rules.discussion_rounds) for p in state["alive"]]
    return [task("vote", list(state["alive"]))]


def is_night_start(config: WerewolfConfig, phase: str) -> bool:
    """Whether `phase` opens the night block of the cycle."""
    cycle = config.phase_cycle
    previous = cycle[cycle.index(phase) - 1]
    return phase in NIGHT_PHASE_ROLE and previous in DAY_PHASES


def next_phase(config: WerewolfConfig, phase: str) -> str:
    """The phase after `phase`; "dawn" between the last night phase and the first day phase."""
    cycle = config.phase_cycle
    if phase == "dawn":
        return next(p for i, p in enumerate(cycle) if p in DAY_PHASES and cycle[i - 1] not in DAY_PHASES)
    following = cycle[(cycle.index(phase) + 1) % len(cycle)]
    if phase in NIGHT_PHASE_ROLE and following in DAY_PHASES:
        return "dawn"
    return following


def enter_phase(state: WerewolfState, config: WerewolfConfig, phase: str) -> Update:
    """Open `phase`: new round at the cycle's start (or a draw after max_rounds), announcements, its plan."""
    update: Update = {"phase": phase, "current": None, "events": []}
    probe = apply_update(state, update)
    if phase == config.phase_cycle[0]:
        if state["round"] >= config.rules.max_rounds:
            rounds = config.rules.max_rounds
            text = f"No side has won after {rounds} round{'s' if rounds != 1 else ''}: the game is a draw."
            ending = {**update, "phase": "end", "finished": True, "winner": None}
            return {**ending, "events": [make_event(apply_update(state, ending), text)]}
        probe["round"] = update["round"] = state["round"] + 1
    if is_night_start(config, phase):
        update["night"] = probe["night"] = _empty_night()
        update["events"].append(
            make_event(probe, f"Night {probe['round']} falls. Everybody closes their eyes.")
        )
    if phase == NIGHT_WITCH and (witch := _holder(state, WITCH)):
        victim = state["night"]["wolf_target"]
        news = f"The werewolves attacked {victim} tonight." if victim else "The werewolves attacked nobody."
        update["events"].append(make_event(probe, news, audience=[witch]))
    update["pending"] = _plan(probe, config, phase)
    return update


def next_group(state: WerewolfState) -> Update:
    """Call the next planned group to act (a new step), or set `current` to None when the phase is done."""
    pending = state.get("pending", [])
    if not pending:
        return {"current": None, "pending": []}
    step = state["step"] + 1
    current = Task(kind=pending[0]["kind"], players=pending[0]["players"], step=step)
    return {"step": step, "current": current, "pending": pending[1:]}


def take_action(config: WerewolfConfig, observation: Observation, raw: object, seed: int) -> Update:
    """Parse one player's raw output into an action record; an unusable one gets the recorded fallback."""
    raw_text = raw if isinstance(raw, str) else str(raw)
    kind, player, step = observation["kind"], observation["player"], observation["step"]

    def record(verb: str | None = None, target: str | None = None, **flags: Any) -> ActionRecord:
        return ActionRecord(
            step=step, round=observation["round"], phase=observation["phase"], kind=kind, player=player,
            raw=raw_text, verb=verb, target=target, speech=flags.get("speech"),
            fallback=flags.get("fallback", False), lenient=flags.get("lenient", False),
            truncated=flags.get("truncated", False),
        )  # fmt: skip

    def fallback(move: str, reason: str, action: dict[str, Any]) -> Fallback:
        role = observation["role"]
        return Fallback(
            role=role, player=player, turn=step, raw=raw_text, fallback=move, reason=reason, action=action
        )

    if kind in act.CHAT_KINDS:
        speech, truncated = act.parse_speech(raw_text, config.rules.max_speech_chars)
        chat = record(speech=speech, truncated=truncated, fallback=not speech)
        silence = [fallback("silence", "empty speech", act.move(None))]
        return {"actions": [chat], "fallbacks": [] if speech else silence}
    parsed = act.parse_action(
        raw_text,
        kind,
        observation["legal"],
        config.players,
        fallback=config.rules.fallback,
        rng=_rng(seed, step, player),
    )
    verb, target = act.verb_of(parsed.action), parsed.action["target"]
    lenient = bool(parsed.action.get("lenient"))
    chosen = record(verb, target, lenient=lenient, fallback=parsed.fallback is not None)
    if parsed.fallback is None:
        return {"actions": [chosen], "fallbacks": []}
    return {"actions": [chosen], "fallbacks": [fallback(parsed.fallback, parsed.reason or "", parsed.action)]}


def _current_records(state: WerewolfState) -> list[ActionRecord]:
    current = state["current"]
    assert current is not None, "resolve_group needs a group that has acted"
    order = {p: i for i, p in enumerate(state["players"])}
    records = [a for a in state.get("actions", []) if a["step"] == current["step"]]
    return sorted(records, key=lambda a: order[a["player"]])


def _top_choices(targets: list[str], players: list[str]) -> list[str]:
    """The most chosen targets, in seating order."""
    counts = Counter(targets)
    best = max(counts.values(), default=0)
    return [p for p in players if counts.get(p, 0) == best and best > 0]


def check_winner(state: WerewolfState, config: WerewolfConfig) -> tuple[str, str] | None:
    """(winning team, message) when an end condition holds, checked in the config's order."""
    wolves = len(_wolves(state))
    others = len(state["alive"]) - wolves
    for condition in config.end_conditions:
        if condition["type"] == "team_eliminated" and wolves == 0:
            return VILLAGERS_TEAM, condition["message"]
        if condition["type"] == "parity" and wolves >= others:
            return WEREWOLVES_TEAM, condition["message"]
    return None


def _eliminate(
    state: WerewolfState, config: WerewolfConfig, dead: list[str], cause: dict[str, str]
) -> Update:
    """Remove `dead` (each with its cause), announce it, and end the game when a side has won."""
    alive = [p for p in state["alive"] if p not in dead]
    eliminated = {**state["eliminated"], **{p: {"round": state["round"], "cause": cause[p]} for p in dead}}
    update: Update = {"alive": alive, "eliminated": eliminated, "events": []}
    for player in dead:
        role = f" They were a {state['roles'][player]}." if config.rules.reveal_role_on_death else ""
        update["events"].append(make_event(state, f"{player} {CAUSE_TEXT[cause[player]]}.{role}"))
    result = check_winner(apply_update(state, update), config)
    if result is not None:
        update.update(finished=True, winner=result[0])
        update["events"].append(make_event(state, result[1]))
    return update


def dawn(state: WerewolfState, config: WerewolfConfig) -> Update:
    """Resolve the night: the attack (unless protected or saved), the poison, then the win check."""
    night = state["night"]
    update: Update = {
        "phase": "dawn",
        "guard_last_target": night["guard_target"],
        "current": None,
        "pending": [],
        "nights": [NightLog(**night, round=state["round"])],
    }
    probe = apply_update(state, update)
    cause: dict[str, str] = {}
    target = night["wolf_target"]
    if target and not night["saved"] and target not in (night["doctor_target"], night["guard_target"]):
        cause[target] = "werewolves"
    if night["poisoned"]:
        cause.setdefault(night["poisoned"], "poison")
    dead = [p for p in state["players"] if p in cause]
    opening = make_event(
        probe, f"Day {state['round']} dawns." + ("" if dead else " Nobody died during the night.")
    )
    return combine_updates({**update, "events": [opening]}, _eliminate(probe, config, dead, cause))


def _resolve_vote(state: WerewolfState, config: WerewolfConfig, records: list[ActionRecord]) -> Update:
    ballots = [f"{a['player']} -> {a['target']}" for a in records if a["verb"] == act.VOTE and a["target"]]
    abstained = [a["player"] for a in records if not (a["verb"] == act.VOTE and a["target"])]
    targets = [a["target"] for a in records if a["verb"] == act.VOTE and a["target"]]
    top = _top_choices(targets, state["players"])
    summary = "Votes: " + (", ".join(ballots) if ballots else "none") + "."
    if abstained:
        summary += f" Abstained: {', '.join(abstained)}."
    exiled = top[0] if len(top) == 1 else None
    if config.rules.exile == "majority":
        needed = len(state["alive"]) // 2 + 1  # more than half of the living players (a tie never has it)
        if exiled is None or targets.count(exiled) < needed:
            exiled = None
            summary += f" Nobody has a majority ({needed} of {len(state['alive'])} votes): nobody is exiled."
    elif len(top) > 1:
        if config.rules.vote_tie == "random":
            exiled = _rng(state["seed"], state["step"], "vote_tie").choice(top)
            summary += f" Tie between {', '.join(top)}, broken by lot."
        else:
            summary += f" Tie between {', '.join(top)}: nobody is exiled."
    elif not top:
        summary += " Nobody is exiled."
    update: Update = {"events": [make_event(state, summary)]}
    if exiled:
        update = combine_updates(update, _eliminate(state, config, [exiled], {exiled: "vote"}))
    return update


def _resolve_kill(state: WerewolfState, config: WerewolfConfig, records: list[ActionRecord]) -> str | None:
    choices = [a["target"] for a in records if a["verb"] == act.KILL and a["target"]]
    top = _top_choices(choices, state["players"])
    if len(top) <= 1:
        return top[0] if top else None
    rule = config.rules.werewolf_disagreement
    if rule == "first":
        return next(c for c in choices if c in top)
    if rule == "random":
        return _rng(state["seed"], state["step"], "kill_tie").choice(top)
    return None


def resolve_group(state: WerewolfState, config: WerewolfConfig) -> Update:
    """Apply the actions of the group that has just acted (state['current'])."""
    records = _current_records(state)
    kind = state["current"]["kind"]  # type: ignore[index]
    if kind in act.CHAT_KINDS:
        audience = _wolves(state) if kind == act.WOLF_CHAT else None
        events = [make_event(state, a["speech"] or "(says nothing)", audience, a["player"]) for a in records]
        return {"events": events}
    if kind == "vote":
        return _resolve_vote(state, config, records)
    night = dict(state["night"])
    record = records[0] if records else None
    if kind == "kill":
        target = _resolve_kill(state, config, records)
        text = (
            f"The werewolves attack {target} tonight." if target else "The werewolves attack nobody tonight."
        )
        return {
            "night": {**night, "wolf_target": target},
            "events": [make_event(state, text, _wolves(state))],
        }
    if record is None or record["verb"] is None:
        return {}
    player, verb, target = record["player"], record["verb"], record["target"]
    update: Update = {}
    if kind == "inspect" and target:
        verdict = "is a werewolf" if state["roles"][target] == WEREWOLF else "is not a werewolf"
        text = f"Your inspection: {target} {verdict}."
    elif kind == "protect" and target:
        key = "guard_target" if state["roles"][player] == GUARD else "doctor_target"
        update["night"] = {**night, key: target}
        text = f"You protect {target} tonight."
    elif verb == act.SAVE:
        update.update(night={**night, "saved": True}, witch_save_available=False)
        text = f"You use your healing potion on {target}."
    elif verb == act.POISON:
        update.update(night={**night, "poisoned": target}, witch_poison_available=False)
        text = f"You poison {target}."
    else:
        text = "You keep your potions tonight."
    update["events"] = [make_event(state, text, [player])]
    return update


def play_game(
    config: WerewolfConfig, decide: Callable[[Observation], str], seed: int = 0, max_steps: int = 10_000
) -> WerewolfState:
    """Play a whole game without LangGraph: `decide(observation) -> raw text` for every turn.

    The same functions drive the LangGraph graph, so a scripted `decide` reproduces the graph's game.
    Members of a group all observe the state before any of them acts, as in the graph's parallel fan-out.
    """
    state = new_game(config, seed)
    phase = config.phase_cycle[0]
    while not state["finished"] and state["step"] < max_steps:
        state = apply_update(
            state, dawn(state, config) if phase == "dawn" else enter_phase(state, config, phase)
        )
        while not state["finished"]:
            state = apply_update(state, next_group(state))
            if state["current"] is None:
                break
            observations = [observe_task(state, config, p) for p in state["current"]["players"]]
            for observation in observations:
                state = apply_update(state, take_action(config, observation, decide(observation), seed))
            state = apply_update(state, resolve_group(state, config))
        phase = next_phase(config, phase)
    return apply_update(state, finish(state, config))
