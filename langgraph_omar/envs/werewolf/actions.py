"""Werewolf action parsing: free model text -> a move checked against the legal set. Never raises.

A move is a verb and an optional target: `KILL NAME`, `INSPECT NAME`, `SAVE [NAME]`, `POISON NAME`, `PASS`,
`PROTECT NAME`, `VOTE NAME`, `ABSTAIN` (also `VOTE NONE`). Parsing is lenient:

* case does not matter, the command may sit anywhere in the text, and a few synonyms are read (attack, check,
  heal, guard, exile, skip, ...); "for", "on", "player" and punctuation between verb and name are skipped;
* when the text holds several commands, the last legal one wins (models tend to reason first, answer last);
* `SAVE` without a name saves tonight's victim (the only legal SAVE target);
* with no verb at all, a text naming exactly one legal target of the kind's main verb (KILL, INSPECT, PROTECT,
  VOTE) is read as that move, marked `lenient`.

The result is the conversation building blocks' `ParsedAction`: the action {"type": VERB, "target": NAME or
None} (plus "lenient": True for a verb-less reading), or, for anything else, the rules' fallback move (see
`fallback_move`) with `fallback` naming the move played instead ("VOTE Bram", "PASS", "no action") and `reason`
saying in one line why the text was not read.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from langgraph_omar.conversation.actions import SILENT, ParsedAction

KILL, INSPECT, SAVE, POISON, PASS, PROTECT, VOTE, ABSTAIN = (
    "KILL",
    "INSPECT",
    "SAVE",
    "POISON",
    "PASS",
    "PROTECT",
    "VOTE",
    "ABSTAIN",
)
NO_TARGET_VERBS = frozenset({PASS, ABSTAIN})

# The kinds of decision a player is asked for; chat kinds are free text.
WOLF_CHAT, SPEAK = "wolf_chat", "speak"
KIND_VERBS: dict[str, tuple[str, ...]] = {
    "kill": (KILL,),
    "inspect": (INSPECT,),
    "witch": (SAVE, POISON, PASS),
    "protect": (PROTECT,),
    "vote": (VOTE, ABSTAIN),
}
KIND_MAIN_VERB = {"kill": KILL, "inspect": INSPECT, "protect": PROTECT, "vote": VOTE}
CHAT_KINDS = (WOLF_CHAT, SPEAK)
KINDS = (*CHAT_KINDS, *KIND_VERBS)

_ALIASES: dict[str, str] = {
    **dict.fromkeys(("kill", "attack", "bite", "eat"), KILL),
    **dict.fromkeys(("inspect", "check", "investigate", "examine"), INSPECT),
    **dict.fromkeys(("save", "heal", "rescue"), SAVE),
    **dict.fromkeys(("poison",), POISON),
    **dict.fromkeys(("pass", "skip"), PASS),
    **dict.fromkeys(("protect", "guard", "defend", "shield"), PROTECT),
    **dict.fromkeys(("vote", "exile", "eliminate", "lynch"), VOTE),
    **dict.fromkeys(("abstain",), ABSTAIN),
}
_VERB_RES = {
    kind: re.compile(
        r"\b(" + "|".join(alias for alias, verb in _ALIASES.items() if verb in verbs) + r")\b", re.IGNORECASE
    )
    for kind, verbs in KIND_VERBS.items()
}
_FILLER_RE = re.compile(
    r"^[\s:,*'\"`=>\[\]()\-]*(?:(?:for|on|against|player|to)\b[\s:,*'\"`\-]*)*", re.IGNORECASE
)
_NOBODY_RE = re.compile(r"(none|nobody|no one|noone)\b", re.IGNORECASE)
_WORD_RE = re.compile(r"[^\s.,;:!?]+")
_SPEAK_PREFIX_RE = re.compile(r"^\s*(?:speak|say|says)\s*[:\-]\s*", re.IGNORECASE)
MAX_PARSE_CHARS = 4000  # models that ramble: the command is looked for in the head of the text only


def move(verb: str | None, target: str | None = None, *, lenient: bool = False) -> dict[str, Any]:
    """The action dict of a move: {"type": VERB, "target": NAME or None}; no move is {"type": "none"}."""
    action: dict[str, Any] = {"type": SILENT if verb is None else verb, "target": target}
    if lenient:
        action["lenient"] = True
    return action


def verb_of(action: Mapping[str, Any]) -> str | None:
    """The verb of an action dict from `move` (None: no move)."""
    return None if action["type"] == SILENT else str(action["type"])


def describe_move(verb: str | None, target: str | None) -> str:
    """'KILL Aurora', 'PASS', or 'no action' (verb None)."""
    if verb is None:
        return "no action"
    return f"{verb} {target}" if target is not None else verb


def _name_after(rest: str, players: Sequence[str]) -> tuple[str | None, str | None]:
    """The player named at the start of `rest` (after filler words), else (None, the word found there)."""
    rest = rest[_FILLER_RE.match(rest).end() :]  # type: ignore[union-attr]  # the pattern matches ""
    lowered = rest.lower()
    for name in sorted(players, key=len, reverse=True):
        if name and lowered.startswith(name.lower()):
            after = rest[len(name) : len(name) + 1]
            if not after or not after.isalnum():
                return name, None
    word = _WORD_RE.match(rest)
    return None, word.group(0) if word else None


def _judge(
    verb: str, target: str | None, unknown: str | None, legal: Mapping[str, Sequence[str]]
) -> dict[str, Any] | str:
    """The legal move `verb target`, or why it is not one."""
    if verb not in legal:
        return f"{verb} is not available now (legal: {sorted(legal)})"
    if verb in NO_TARGET_VERBS:
        return move(verb)
    targets = list(legal[verb])
    if target is None:
        if verb == SAVE and len(targets) == 1:
            return move(verb, targets[0])
        problem = f"{unknown!r} is not a player" if unknown else "needs a player name"
        return f"{verb}: {problem} (allowed: {targets})"
    if target not in targets:
        return f"{verb} {target} is not allowed (allowed: {targets})"
    return move(verb, target)


def _mentioned(text: str, names: Sequence[str]) -> list[str]:
    lowered = text.lower()
    found = []
    for name in names:
        if name and re.search(r"(?<!\w)" + re.escape(name.lower()) + r"(?!\w)", lowered):
            found.append(name)
    return found


def parse_action(
    text: object,
    kind: str,
    legal: Mapping[str, Sequence[str]],
    players: Sequence[str],
    *,
    fallback: str = "abstain",
    rng: random.Random | None = None,
) -> ParsedAction:
    """Read one move of `kind` from model text; an unusable text gets the fallback move (see `fallback_move`).

    legal: verb -> allowed targets for the verbs that are legal now (no-target verbs map to an empty list).
    players: every player's name (to tell an illegal known name from an unknown word).
    fallback: 'random' or 'abstain' (the rules' `fallback`); rng: draws the random fallback (default: seed 0).
    Never raises: a kind it does not know, or any text at all, yields a result.
    """
    read = _read(text, kind, legal, players)
    if isinstance(read, dict):
        return ParsedAction(read)
    verb, target = fallback_move(kind, legal, fallback, rng or random.Random(0))
    return ParsedAction(move(verb, target), fallback=describe_move(verb, target), reason=read)


def _read(
    text: object, kind: str, legal: Mapping[str, Sequence[str]], players: Sequence[str]
) -> dict[str, Any] | str:
    """The legal move the text holds, or why there is none."""
    if kind not in KIND_VERBS:
        return f"unknown action kind {kind!r}"
    text = text if isinstance(text, str) else str(text)
    text = text[:MAX_PARSE_CHARS]
    candidates: list[dict[str, Any] | str] = []
    for match in _VERB_RES[kind].finditer(text):
        verb = _ALIASES[match.group(1).lower()]
        rest = text[match.end() : match.end() + 80]
        target, unknown = _name_after(rest, players)
        if verb == VOTE and target is None:
            filler_end = _FILLER_RE.match(rest).end()  # type: ignore[union-attr]
            if _NOBODY_RE.match(rest, filler_end):
                verb = ABSTAIN
        candidates.append(_judge(verb, target, unknown, legal))
    legal_ones = [c for c in candidates if isinstance(c, dict)]
    if legal_ones:
        return legal_ones[-1]
    if candidates:
        return candidates[-1]
    main = KIND_MAIN_VERB.get(kind)
    if main is not None and main in legal:
        named = _mentioned(text, list(legal[main]))
        if len(named) == 1:
            return move(main, named[0], lenient=True)
    formats = " / ".join(f"{v}" if v in NO_TARGET_VERBS else f"{v} NAME" for v in KIND_VERBS[kind])
    return f"unparsable: expected {formats}"


def move_pattern(legal: Mapping[str, Sequence[str]]) -> str:
    """A regular expression whose matches are exactly the legal moves (`VERB NAME` for each allowed target, a
    no-target verb alone): a reply decoded under it cannot fall back."""
    moves = [
        f"{verb} ({'|'.join(re.escape(name) for name in targets)})"
        if targets and verb not in NO_TARGET_VERBS
        else verb
        for verb, targets in legal.items()
    ]
    return f"({'|'.join(moves)})"


def fallback_move(
    kind: str, legal: Mapping[str, Sequence[str]], mode: str, rng: random.Random
) -> tuple[str | None, str | None]:
    """The move played instead of an illegal or unparsable one.

    The witch always passes (a fallback never spends a one-off potion). mode 'random': a uniformly drawn legal
    target of the kind's main verb (abstain when there is none); mode 'abstain': no move (ABSTAIN for a vote).
    """
    if kind == "witch":
        return PASS, None
    main = KIND_MAIN_VERB.get(kind)
    targets = list(legal.get(main, ())) if main else []
    if mode == "random" and targets:
        return main, rng.choice(targets)
    return (ABSTAIN, None) if kind == "vote" else (None, None)


def parse_speech(text: object, max_chars: int) -> tuple[str, bool]:
    """Free-text speech on one line: strip a leading 'speak:' and quotes, cut to max_chars.

    Whitespace runs (newlines included) become one space, so that a speech cannot start a line of the event
    log that looks like the moderator's. Returns (speech, truncated).
    """
    text = text if isinstance(text, str) else str(text)
    speech = _SPEAK_PREFIX_RE.sub("", " ".join(text.split()), count=1).strip()
    if len(speech) >= 2 and speech[0] == speech[-1] and speech[0] in "\"'":
        speech = speech[1:-1].strip()
    if len(speech) > max_chars:
        return speech[:max_chars].rstrip() + " ...", True
    return speech, False
