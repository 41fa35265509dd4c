"""Budget-aware closing of constrained output: near its token cap, a constrained row closes what it has open.

A grammar keeps a completion well-formed but not short: a JSON string can run until `max_tokens` and never
parse. Here each constrained row keeps a plan, the token ids of a short completion from its matcher's state
(the open string closed, then the open arrays and objects, required keys filled with short valid values, then
any literal suffix such as a tool-call tag). Near the cap, a sampled token is kept only if the plan from the
state after it still fits in the tokens left; otherwise the plan's first token is taken instead (forced). So
a completion whose cap leaves room for the shortest valid output always ends complete, and a row that took a
forced token says so (`closed_early`).

Hand-written: xgrammar (like vLLM, SGLang and llama.cpp, which use it or their own grammars) masks tokens but
has no notion of a token budget. The search for the plan is greedy, not exhaustive: from a fork of the row's
matcher it takes xgrammar's forced continuation (`find_jump_forward_string`) whenever there is one, else the
first character of a fixed preference order the grammar accepts: outside a JSON string, closers (`}` `]`),
then a separator, then the shortest values (`0`, `""`, `true`, `null`, `false`, `[]`, `{}`); inside one, the
closing quote first. The text is then cut into vocabulary tokens by greedy longest match over the decoded
vocabulary (never re-tokenized by the tokenizer, whose handling of a leading space differs between models) and
checked token by token on another fork. Cost, measured on the dev machine with SmolLM2's vocabulary: 0.05 ms
per plan for a schema of two strings, 0.2-0.3 ms for the SOTOPIA judge's seven integers, against ~17 ms per row
and token for a forward pass of the 135M model on a CPU. A row is steered (one plan per token) only within
`WINDOW` tokens of the point where its plan would no longer fit; farther from its cap it recomputes its plan
every `WINDOW` tokens, to know when it gets there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import xgrammar as xgr

WINDOW = 16  # rows this many tokens (beyond their plan) from the cap are left alone
MAX_CLOSING_CHARS = 1024  # a longer plan is given up (the greedy order loops, or the grammar is huge)

_OUTSIDE = '}],0"tnf[{123456789-.'  # outside a string: close, separate, then the shortest values
_INSIDE = '"' + _OUTSIDE  # inside a string: its closing quote first
_PRINTABLE = "".join(map(chr, range(32, 127)))  # then any ASCII character (enums, patterns, minLength)
_CONTINUATIONS = (b"\x80", b"\xa0", b"\x90", b"\xbf")  # a token that stopped inside a UTF-8 character


class JsonLex(NamedTuple):
    """Where a text stands in JSON's lexical structure: inside a string, and after a backslash there."""

    in_string: bool = False
    escaped: bool = False


def lex(state: JsonLex, data: bytes) -> JsonLex:
    """`state` after reading `data` (ASCII quotes and backslashes: UTF-8 continuation bytes never match)."""
    in_string, escaped = state
    for byte in data:
        if escaped:
            escaped = False
        elif byte == 0x5C and in_string:  # backslash
            escaped = True
        elif byte == 0x22:  # quote
            in_string = not in_string
    return JsonLex(in_string, escaped)


class VocabPieces:
    """The vocabulary's decoded bytes, to cut a text into tokens by greedy longest match."""

    def __init__(self, decoded: Sequence[bytes], excluded: set[int]) -> None:
        """decoded: each token id's bytes (xgrammar's `TokenizerInfo.decoded_vocab`); excluded: ids never used
        (special and stop tokens)."""
        self.decoded = list(decoded)
        self._ids: dict[bytes, int] = {}
        for token, piece in enumerate(self.decoded):
            if piece and token not in excluded:
                self._ids.setdefault(piece, token)
        self._longest = min(max(map(len, self._ids), default=1), 32)

    def tokens(self, data: bytes) -> list[int] | None:
        """Token ids whose bytes concatenate to `data`; None when some byte has no token."""
        out, start = [], 0
        while start < len(data):
            for end in range(min(len(data), start + self._longest), start, -1):
                token = self._ids.get(data[start:end])
                if token is not None:
                    out.append(token)
                    start = end
                    break
            else:
                return None
        return out


def closing_text(matcher: xgr.GrammarMatcher, state: JsonLex) -> bytes | None:
    """A short text that completes `matcher`'s grammar from its state (consumed: pass a fork), the lexical
    `state` of the text so far guiding the choice; None when none is found within MAX_CLOSING_CHARS."""
    out = bytearray()
    while len(out) <= MAX_CLOSING_CHARS:
        if matcher.is_completed():
            return bytes(out)
        forced = matcher.find_jump_forward_string()
        if forced:
            piece = forced.encode()
            if not matcher.accept_string(piece):
                return None
        else:
            order = (_INSIDE if state.in_string and not state.escaped else _OUTSIDE) + _PRINTABLE
            candidates = [c.encode() for c in order]
            piece = next((c for c in [*candidates, *_CONTINUATIONS] if matcher.accept_string(c)), b"")
            if not piece:
                return None
        out += piece
        state = lex(state, piece)
    return None


class Closable(Protocol):
    """What the closer needs of a row's grammar (`constraints.RowGrammar`)."""

    @property
    def steps(self) -> int:
        """Tokens accepted so far."""
        ...

    def closing(self, after: int | None = None) -> list[int] | None:
        """The plan from the current state (or the state after token `after`); None when none is found."""
        ...


class BudgetCloser:
    """One row's plan and the choice, each step, between the sampled token and the plan's next one.

    The plan is kept for the state after `_plan_at` accepted tokens. Within `WINDOW` tokens (beyond the plan's
    length) of the cap it is fresh at every step, and a sampled token whose own plan would not fit in the
    tokens left after it is replaced by the current plan's first token: the plan then fits again, one token
    shorter, so the output completes by the cap whenever the first plan fitted. A row whose grammar the search
    cannot close (a regular expression the preference order loops in, say) is tried again every `WINDOW`
    tokens and otherwise left alone.
    """

    def __init__(self, grammar: Closable, stop_ids: Sequence[int], window: int = WINDOW) -> None:
        self.grammar, self.stop_ids, self.window = grammar, set(stop_ids), window
        self._stop = min(stop_ids) if stop_ids else None
        self.reset()

    def reset(self) -> None:
        self._plan: list[int] | None = None  # None: none found (at `_plan_at`), or none sought yet
        self._plan_at = -self.window
        self.closed_early = False

    def _far(self, plan: list[int], remaining: int) -> bool:
        return remaining > len(plan) + self.window

    def choose(self, token: int, remaining: int) -> int:
        """The token to take: `token` (sampled under the grammar's mask), or the plan's next token when
        `token` would leave no room to close within `remaining` tokens (this one included)."""
        if token in self.stop_ids:
            return token
        steps = self.grammar.steps
        plan = self._plan if self._plan_at == steps else None
        if plan is None:
            old, recent = self._plan, steps - self._plan_at < self.window
            if recent and (old is None or self._far(old, remaining)):
                return token  # far from the cap by a recent plan, or no plan found lately: no work
            plan = self._plan = self.grammar.closing()
            self._plan_at = steps
            if plan is None:  # nothing found to close with: the row decodes as it would have
                return token
        if self._far(plan, remaining) or len(plan) > remaining:  # far, or too late to close anyway
            return token
        if plan and token == plan[0]:
            self._plan, self._plan_at = plan[1:], steps + 1
            return token
        after = self.grammar.closing(after=token)
        if after is not None and len(after) <= remaining - 1:
            self._plan, self._plan_at = after, steps + 1
            return token
        self.closed_early = True
        if not plan:  # complete already, and the token would reopen it: end here
            return token if self._stop is None else self._stop
        self._plan, self._plan_at = plan[1:], steps + 1
        return plan[0]
