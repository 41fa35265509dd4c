"""Parse a negotiator's free text into an action: offer, accept, reject, walk away, or plain talk.

The format the prompts ask for is one action line, anywhere in the message:

    OFFER 120                          (price kind: the price the speaker proposes)
    OFFER 2 books 1 hat 0 balls        (split kind: what the speaker keeps; also `books=2 hats=1`)
    ACCEPT  |  REJECT  |  WALK AWAY

Leniency, in this order:
1. Lines that start with an action word (after markdown marks, list bullets or an `Action:` label; any case)
   are read; when several do, the last valid one wins (so `REJECT` then `OFFER 100` is a counter-offer).
   Prices may carry `$`, thousands commas, decimals, a `k` suffix or prose around them.
2. Otherwise the words are looked for anywhere in the text, with the priority accept > offer > walk away >
   reject. In prose an accept must be a decision (in capitals, "accepted", a sentence of its own, or with the
   speaker as subject: "I'll gladly accept"), so "you will have to accept less" is not one; a negated accept ("I can't accept") counts as a reject and a
   negated walk away is ignored.
3. Otherwise the message is talk: `type == "talk"` and `fallback` names why (`no_action`,
   `offer_without_price`, `offer_without_items`). The caller records the fallback; the game goes on.

In the split kind, items an offer does not mention are left to the other side (the speaker keeps 0 of them).
`parse_action` never raises on any string (fuzzed with hypothesis in the tests).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

ActionType = Literal["offer", "accept", "reject", "walk_away", "talk"]

_NUMBER_WORDS = {
    "no": 0,
    "none": 0,
    "zero": 0,
    "one": 1,
    "a": 1,
    "an": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
_COUNT = r"(?:\d{1,4}|" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True)) + r")"

_KEYWORD = r"(?P<kw>walk[\s_-]*away|accept(?:ed|s)?|reject(?:ed|s)?|counter[\s-]*offer|counter|offer|propose)"
_LINE_ACTION = re.compile(
    r"^[\s>#\-•+\"'(\[]*(?:(?:my\s+|final\s+)?action\s*[:=\-]\s*)?" + _KEYWORD + r"\b(?P<rest>.*)$",
    re.IGNORECASE,
)
_PRICE = re.compile(
    r"(?P<neg>-\s*)?\$?\s*(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d{1,12})?|\d{1,12}(?:\.\d{1,12})?)(?P<k>\s*[kK]\b)?"
)
_NEGATION = re.compile(
    r"(?:\bnot|n't|\bcannot|\bnever|\bno|\bwon'?t|\brefuse to)\s+(?:\w+\s+){0,2}$", re.IGNORECASE
)
_ACCEPT = re.compile(r"\b(?:accept(?:ed|s)?|agree)\b", re.IGNORECASE)
# Before an inline accept/agree: the speaker as subject ("I", "we'll", "I gladly"), so the word is a decision.
_FIRST_PERSON = re.compile(r"\b(?:i|we)(?:'ll|'d| will| would| do| can)?(?:\s+\w+)?\s+$", re.IGNORECASE)
_OFFER = re.compile(r"\b(?:offer|propose|counter[\s-]*offer|counter)\b", re.IGNORECASE)
_WALK = re.compile(r"\bwalk(?:ing)?[\s_-]*away\b", re.IGNORECASE)
_REJECT = re.compile(r"\breject(?:ed|s)?\b", re.IGNORECASE)
_OFFER_REACH = 60  # characters after an inline "offer" in which its price or items must appear


@dataclass(frozen=True)
class NegotiationAction:
    """One parsed action.

    `price` is set for price offers; `split` for split offers (units the speaker keeps, in the scenario's item
    order). `fallback` is None when the text held a valid action, else why it is talk.
    """

    type: ActionType
    price: float | None = None
    split: tuple[int, ...] | None = None
    fallback: str | None = None


def parse_action(text: str, items: Sequence[str] | None = None) -> NegotiationAction:
    """Read the action in `text`. `items` (plural item names) selects the split kind; None the price kind."""
    cleaned = text.replace("*", "").replace("`", "")
    found = _from_action_lines(cleaned, items)
    if found is not None and found.fallback is None:
        return found
    inline = _from_inline_words(cleaned, items)
    if inline is not None:
        return inline
    return found if found is not None else NegotiationAction("talk", fallback="no_action")


def _from_action_lines(text: str, items: Sequence[str] | None) -> NegotiationAction | None:
    """The last valid action among lines that start with an action word; else the last invalid one; else None."""
    last_invalid: NegotiationAction | None = None
    for line in reversed(text.splitlines()):
        match = _LINE_ACTION.match(line)
        if match is None:
            continue
        action = _action_for(match.group("kw"), match.group("rest"), items)
        if action.fallback is None:
            return action
        last_invalid = last_invalid or action
    return last_invalid


def _from_inline_words(text: str, items: Sequence[str] | None) -> NegotiationAction | None:
    """Action words anywhere in prose, by priority accept > offer > walk away > reject."""
    negated_accept = False
    for match in _ACCEPT.finditer(text):
        if _is_negated(text, match.start()):
            negated_accept = True
        elif _is_decision(text, match):
            return NegotiationAction("accept")
    for match in _OFFER.finditer(text):
        action = _action_for("offer", text[match.end() : match.end() + _OFFER_REACH], items)
        if action.fallback is None:
            return action
    for match in _WALK.finditer(text):
        if not _is_negated(text, match.start()):
            return NegotiationAction("walk_away")
    if negated_accept or _REJECT.search(text):
        return NegotiationAction("reject")
    return None


def _is_decision(text: str, match: re.Match[str]) -> bool:
    """An inline accept/agree that is the speaker's decision: the keyword in capitals ("... fair. ACCEPT"),
    "accepted", a sentence of its own ("Fair. Accept."), or with the speaker as subject ("I'll accept")."""
    word = match.group()
    before = text[max(0, match.start() - 30) : match.start()]
    return (
        word.isupper()
        or word.lower() == "accepted"
        or re.search(r"(?:^|[.!?]\s+)$", before) is not None
        or _FIRST_PERSON.search(before) is not None
    )


def _is_negated(text: str, start: int) -> bool:
    return _NEGATION.search(text[max(0, start - 40) : start]) is not None


def _action_for(keyword: str, rest: str, items: Sequence[str] | None) -> NegotiationAction:
    word = keyword.lower()
    if word.startswith("walk"):
        return NegotiationAction("walk_away")
    if word.startswith("accept"):
        return NegotiationAction("accept")
    if word.startswith("reject"):
        return NegotiationAction("reject")
    if items is None:
        price = parse_price(rest)
        if price is None:
            return NegotiationAction("talk", fallback="offer_without_price")
        return NegotiationAction("offer", price=price)
    split = parse_split(rest, items)
    if split is None:
        return NegotiationAction("talk", fallback="offer_without_items")
    return NegotiationAction("offer", split=split)


def parse_price(text: str) -> float | None:
    """The first price in `text` ("$1,200.50", "-5", "1.2k"), or None. Negative prices are returned as is."""
    match = _PRICE.search(text)
    if match is None:
        return None
    value = float(match.group("num").replace(",", ""))
    if match.group("k"):
        value *= 1000.0
    if match.group("neg"):
        value = -value
    return value if math.isfinite(value) else None


def parse_split(text: str, items: Sequence[str]) -> tuple[int, ...] | None:
    """Units of each item the speaker keeps, from "2 books 1 hat" or "books=2, hats: 1"; None if no item named.

    Unmentioned items are 0. An item named twice keeps its first count.
    """
    name_first = any(_name_then_count(name).search(text) for name in items)
    counts: list[int] = []
    mentioned = False
    for name in items:
        pattern = _name_then_count(name) if name_first else _count_then_name(name)
        match = pattern.search(text)
        if match is None:
            counts.append(0)
            continue
        mentioned = True
        counts.append(_count_value(match.group("count")))
    return tuple(counts) if mentioned else None


def _item_name(name: str) -> str:
    singular = name[:-1] if name.endswith("s") and len(name) > 1 else name
    return re.escape(singular) + r"s?"


def _name_then_count(name: str) -> re.Pattern[str]:
    return re.compile(r"\b" + _item_name(name) + r"\s*[:=]\s*(?P<count>" + _COUNT + r")\b", re.IGNORECASE)


def _count_then_name(name: str) -> re.Pattern[str]:
    return re.compile(
        r"\b(?P<count>" + _COUNT + r")\s*(?:x\s*)?(?:of\s+)?(?:the\s+)?" + _item_name(name) + r"\b",
        re.IGNORECASE,
    )


def _count_value(word: str) -> int:
    lowered = word.lower()
    return _NUMBER_WORDS[lowered] if lowered in _NUMBER_WORDS else int(lowered)
