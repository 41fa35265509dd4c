"""Action formats: how a role's raw text becomes a parsed, JSON-able action.

Every format has `instructions(context)` (appended to the role's system prompt) and `parse(text, context)`,
which never raises on any text: output that is not a legal action yields a `ParsedAction` with a defined
fallback action and the reason, and the role node records it in the state's `fallbacks`.

Action dicts always carry a `type`. Types with a meaning for the conversation machinery:
`"leave"` (the role leaves the conversation) and `"none"` (the role said nothing; counts towards silence).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from langgraph_omar.conversation.state import scenario_of

LEAVE = "leave"
SILENT = "none"
ABSTAIN = "abstain"
FALLBACK_MODES = ("abstain", "random")

_ABSTAIN_PATTERN = re.compile(r"\b(abstain|pass)\b", re.IGNORECASE)
_SEPARATORS = " \t\r\n:=-*_\"'`>"  # markdown and punctuation models put between a verb and its target


@dataclass(frozen=True)
class ActionContext:
    """Who is acting, on which turn, in which state (legal sets are computed from it)."""

    role: str
    turn: int
    state: Mapping[str, Any]


@dataclass(frozen=True)
class ParsedAction:
    action: dict[str, Any]
    fallback: str | None = None  # which fallback replaced an illegal move ("abstain", "random"), else None
    reason: str | None = None  # why the text was not a legal action, when a fallback was used


class ActionFormat(Protocol):
    def instructions(self, context: ActionContext) -> str: ...

    def parse(self, text: str, context: ActionContext) -> ParsedAction: ...


@dataclass(frozen=True)
class FreeText:
    """Free speech: any text is legal. Blank text is the silent action; text containing `leave_marker`
    (case-insensitive), when one is set, is the leave action."""

    leave_marker: str | None = None  # e.g. "[leave]"; None: a free-text role never leaves
    instructions_text: str = ""  # extra instructions shown to the role, if any

    def __post_init__(self) -> None:
        if self.leave_marker is not None and not self.leave_marker.strip():
            raise ValueError("FreeText.leave_marker: expected a non-blank string or None")

    def instructions(self, context: ActionContext) -> str:
        parts = [self.instructions_text] if self.instructions_text else []
        if self.leave_marker:
            parts.append(f"To leave the conversation, write {self.leave_marker}.")
        return " ".join(parts)

    def parse(self, text: str, context: ActionContext) -> ParsedAction:
        if not text.strip():
            return ParsedAction({"type": SILENT})
        if self.leave_marker and self.leave_marker.lower() in text.lower():
            return ParsedAction({"type": LEAVE})
        return ParsedAction({"type": "speak"})


Options = Sequence[str] | Callable[[ActionContext], Sequence[str]]


@dataclass(frozen=True)
class ChoiceAction:
    """A structured move `VERB NAME` (e.g. `vote bob`) where NAME must be in a legal set computed from the
    state. The last legal `VERB NAME` in the text wins; matching is case-insensitive and tolerates markdown
    and punctuation between verb and name. Parsed action: {"type": verb, "target": NAME}."""

    verb: str  # one word, e.g. "vote", "kill", "inspect"
    options: Options  # the legal names, or a function of the ActionContext returning them
    fallback: Literal["abstain", "random"] = "abstain"  # what replaces an illegal or missing choice
    allow_abstain: bool = (
        True  # whether the words "abstain" or "pass" (when no legal choice is found) are a move
    )
    seed: int = 0  # mixed with the scenario's seed, the role and the turn for "random" fallbacks

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z_]+", self.verb):
            raise ValueError(f"ChoiceAction.verb: expected one word of letters, got {self.verb!r}")
        if self.fallback not in FALLBACK_MODES:
            raise ValueError(
                f"ChoiceAction.fallback: expected one of {FALLBACK_MODES}, got {self.fallback!r}"
            )

    def legal_options(self, context: ActionContext) -> list[str]:
        options = self.options(context) if callable(self.options) else self.options
        if isinstance(options, str) or not all(isinstance(option, str) for option in options):
            raise ValueError(
                f"ChoiceAction({self.verb!r}) options: expected a sequence of str, got {options!r}"
            )
        return list(dict.fromkeys(options))

    def instructions(self, context: ActionContext) -> str:
        legal = self.legal_options(context)
        text = (
            f"End your reply with `{self.verb} NAME`, where NAME is one of: {', '.join(legal) or '(none)'}."
        )
        if self.allow_abstain:
            text += " Write `abstain` to make no choice."
        return text

    def parse(self, text: str, context: ActionContext) -> ParsedAction:
        legal = self.legal_options(context)
        target, reason = find_choice(text, self.verb, legal)
        if target is not None:
            return ParsedAction({"type": self.verb, "target": target})
        if self.allow_abstain and _ABSTAIN_PATTERN.search(text):
            return ParsedAction({"type": ABSTAIN})
        if self.fallback == "random" and legal:
            choice = random.Random(self._fallback_seed(context)).choice(legal)
            return ParsedAction({"type": self.verb, "target": choice}, fallback="random", reason=reason)
        if self.fallback == "random":
            reason += "; no legal option to pick at random"
        return ParsedAction({"type": ABSTAIN}, fallback="abstain", reason=reason)

    def _fallback_seed(self, context: ActionContext) -> str:
        # A string seed is hashed with sha512 by `random`: reproducible across processes, unlike hash().
        episode_seed = scenario_of(context.state).get("seed", "")
        return f"{self.seed}|{episode_seed}|{context.role}|{context.turn}"


def find_choice(text: str, verb: str, legal: Sequence[str]) -> tuple[str | None, str]:
    """The last legal NAME following `verb` in `text` (canonical spelling from `legal`), or None and the
    reason no legal choice was found. Never raises."""
    by_length = sorted(legal, key=len, reverse=True)  # "bobby" must win over "bob"
    window = (len(by_length[0]) if by_length else 0) + 64
    found: str | None = None
    first_illegal: str | None = None
    for match in re.finditer(rf"\b{re.escape(verb)}\b", text, re.IGNORECASE):
        # A bounded window keeps parsing linear in the text's length however often the verb occurs.
        rest = text[match.end() : match.end() + window].lstrip(_SEPARATORS)
        target = next((option for option in by_length if _starts_with_word(rest, option)), None)
        if target is not None:
            found = target
        elif first_illegal is None:
            first_illegal = rest.split(maxsplit=1)[0][:40] if rest.split() else ""
    if found is not None:
        return found, ""
    if not legal:
        return None, "no legal options"
    if first_illegal is not None:
        return None, f"{verb} {first_illegal!r} is not a legal choice (legal: {', '.join(legal)})"
    return None, f"no '{verb} NAME' found"


def _starts_with_word(text: str, word: str) -> bool:
    if not word or text[: len(word)].lower() != word.lower():
        return False
    following = text[len(word) : len(word) + 1]
    return not (following.isalnum() or following == "_")
