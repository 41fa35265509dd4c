"""Hypothesis strategies for model output fed to parsers that must never raise: up to 20k characters, with
the long digit runs (past Python's 4300-digit int limit and float's 308) and JSON fragments that broke them."""

from __future__ import annotations

from hypothesis import strategies as st

MAX_CHARS = 20_000
# lengths at the limits that matter, and any length up to past the int limit
_DIGIT_COUNTS = st.one_of(st.sampled_from([1, 308, 309, 310, 4300, 4301, 6000]), st.integers(1, 6000))
digit_runs = st.builds(
    lambda sign, digit, count, tail: sign + digit * count + tail,
    st.sampled_from(["", "-", "+"]),
    st.sampled_from("0123456789"),
    _DIGIT_COUNTS,
    st.sampled_from(["", ".5", "e5", "e999"]),
)


def model_outputs(*number_prefixes: str) -> st.SearchStrategy[str]:
    """Texts joined from free text, digit runs, and digit runs after each of `number_prefixes` (say
    '{"goal": ' or 'OFFER '), closed or not by '}', cut to MAX_CHARS."""
    pieces = [st.text(max_size=300), digit_runs]
    if number_prefixes:
        pieces.append(
            st.builds(
                lambda prefix, number, close: prefix + number + close,
                st.sampled_from(number_prefixes),
                digit_runs,
                st.sampled_from(["}", "", ', "x": 1}']),
            )
        )
    return st.lists(st.one_of(*pieces), max_size=8).map(lambda parts: "".join(parts)[:MAX_CHARS])
