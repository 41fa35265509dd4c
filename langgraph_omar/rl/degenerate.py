"""Degenerate-turn detection: turns that get no policy signal (OMAR's judge against reward hacking; the rule is
in docs/design.md, "Degenerate turns").

A turn is degenerate when it is
- `empty`: no completion token, or only whitespace;
- `over_length`: cut at max_tokens (`finish_reason == "length"`), or closed by its grammar to end by then
  (`closed_early` in its metadata, see `serving.closing`: a turn that would have been cut);
- `off_format`: the environment replaced its action by a fallback: `Turn.fallback` is set (the trace recorder
  sets it from the final state's `fallbacks` records that name the turn's model call, see
  `langgraph_omar.conversation.calls`);
- `repeated`: the same text (of at least `min_repeat_chars` characters: saying "REJECT" twice is fine) as
  an earlier turn of the same agent in the episode (another agent of its role saying it is that agent's own
  move), or a completion whose n-grams repeat more than a set share (a loop).
The first reason that applies, in that order, is recorded in `Turn.degenerate`.
"""

from __future__ import annotations

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


def degenerate_reason(turn: Turn, earlier_texts: Iterable[str], settings: DegenerateSettings) -> str | None:
    """Why `turn` is degenerate, or None. earlier_texts: normalized texts of the agent's earlier turns."""
    text = _normalized(turn.text)
    if settings.empty and ((turn.source == "policy" and not turn.completion_ids) or not text):
        return "empty"
    if settings.over_length and (turn.finish_reason == "length" or turn.metadata.get("closed_early")):
        return "over_length"
    if settings.off_format and turn.fallback is not None:
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
        earlier: dict[str, list[str]] = {}
        for turn in episode.turns:
            history = earlier.setdefault(turn.agent, [])
            turn.degenerate = degenerate_reason(turn, history, settings)
            history.append(_normalized(turn.text))
            total += 1
            if turn.degenerate is not None:
                counts[turn.degenerate] += 1
    flagged = sum(counts.values())
    metrics: dict[str, Any] = {"degenerate_turns": flagged, "degenerate_fraction": flagged / max(total, 1)}
    metrics.update({f"degenerate_{reason}": n for reason, n in counts.items()})
    return metrics
