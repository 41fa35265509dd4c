"""Degenerate-turn detection: turns that earn no pseudo-reward (OMAR's judge against reward hacking).

A turn is degenerate when it is
- `empty`: no completion token, or only whitespace;
- `over_length`: cut at max_tokens (`finish_reason == "length"`);
- `off_format`: the environment replaced its action by a fallback (the final state's `fallbacks`, matched to
  the turn by speaker and text, or `Turn.fallback` when the recorder set it); the speaker is the record's
  `player` when it has one (Werewolf: turns are named by player, and `role` is the game role, e.g.
  "Werewolf"), else its `role` (conversation graphs);
- `repeated`: the same text (of at least `min_repeat_chars` characters: saying "REJECT" twice is fine) as
  an earlier turn of the same role in the episode, or a completion whose n-grams repeat more than a set share
  (a loop).
The first reason that applies, in that order, is recorded in `Turn.degenerate`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from langgraph_omar.rl.config import DegenerateSettings
from langgraph_omar.trajectory import Episode, Turn

REASONS = ("empty", "over_length", "off_format", "repeated")


def repeated_ngram_fraction(ids: Sequence[int], n: int) -> float:
    """Share of a sequence's n-grams that occurred earlier in it: 0 for no repetition, -> 1 for a loop.

    [1, 2, 1, 2, 1, 2] with n=2: n-grams 12 21 12 21 12, of which the last 3 are repeats -> 3/5.
    """
    grams = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def _normalized(text: str) -> str:
    return " ".join(text.lower().split())


def fallback_texts(episode: Episode) -> Counter[tuple[str, str]]:
    """(speaker, normalized raw text) of each move the environment replaced by a fallback, with multiplicity;
    the speaker, as turns name it, is the record's `player` when present, else its `role`."""
    counts: Counter[tuple[str, str]] = Counter()
    for i, record in enumerate(episode.metadata.get("fallbacks") or []):
        if (
            not isinstance(record, dict)
            or "raw" not in record
            or not ("player" in record or "role" in record)
        ):
            raise ValueError(
                f"episode {episode.episode_id}: metadata.fallbacks[{i}] must be a dict with 'raw' and 'player' "
                f"or 'role', got {record!r}"
            )
        speaker = record["player"] if "player" in record else record["role"]
        counts[(str(speaker), _normalized(str(record["raw"])))] += 1
    return counts


def degenerate_reason(
    turn: Turn, earlier_texts: Iterable[str], off_format: bool, settings: DegenerateSettings
) -> str | None:
    """Why `turn` is degenerate, or None. earlier_texts: normalized texts of the role's earlier turns."""
    text = _normalized(turn.text)
    if settings.empty and ((turn.source == "policy" and not turn.completion_ids) or not text):
        return "empty"
    if settings.over_length and turn.finish_reason == "length":
        return "over_length"
    if settings.off_format and (off_format or turn.fallback is not None):
        return "off_format"
    if settings.repeated:
        if len(text) >= settings.min_repeat_chars and text in set(earlier_texts):
            return "repeated"
        if (
            repeated_ngram_fraction(turn.completion_ids, settings.ngram)
            > settings.max_repeated_ngram_fraction
        ):
            return "repeated"
    return None


def mark_degenerate(episodes: Sequence[Episode], settings: DegenerateSettings) -> dict[str, Any]:
    """Set `Turn.degenerate` on every turn of `episodes` (overwriting it) and return counts per reason.

    Returns {"degenerate_turns": n, "degenerate_fraction": n / turns, "degenerate_<reason>": count, ...}.
    """
    counts = dict.fromkeys(REASONS, 0)
    total = 0
    for episode in episodes:
        fallbacks = fallback_texts(episode)
        earlier: dict[str, list[str]] = {}
        for turn in episode.turns:
            key = (turn.role, _normalized(turn.text))
            off_format = fallbacks[key] > 0
            if off_format:
                fallbacks[key] -= 1
            history = earlier.setdefault(turn.role, [])
            turn.degenerate = degenerate_reason(turn, history, off_format, settings)
            history.append(key[1])
            total += 1
            if turn.degenerate is not None:
                counts[turn.degenerate] += 1
    flagged = sum(counts.values())
    metrics: dict[str, Any] = {"degenerate_turns": flagged, "degenerate_fraction": flagged / max(total, 1)}
    metrics.update({f"degenerate_{reason}": n for reason, n in counts.items()})
    return metrics
