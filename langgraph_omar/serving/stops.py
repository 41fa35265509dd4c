"""Stop strings checked as tokens arrive: the new text of each token, searched where a stop could have appeared.

Decoding a row's whole completion at every step to look for its stop strings costs O(length^2) per row over a
reply. `IncrementalText` decodes a short window instead (the detokenizer of vLLM and text-generation-inference:
the text of the ids since a recent offset, minus the text of the ids before the last emitted one, held back
while a byte-level token leaves a character incomplete), and `StopWatch` searches only the tail where the
newest characters could complete a stop string. The final text is still one full decode of the completion
(see `decoding`), so the window only decides when to look.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase


class IncrementalText:
    """The decoded text of a growing list of ids, extended a token at a time (special tokens skipped)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""
        self._prefix = 0  # ids[_prefix:_read] give the context the next delta is decoded in
        self._read = 0  # ids before this are in `text`

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def push(self, token: int) -> str:
        """Add one id; returns the characters it completed ("" while a multi-byte character is unfinished)."""
        self.ids.append(token)
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        delta = after[len(before) :]
        self.text += delta
        self._prefix, self._read = self._read, len(self.ids)
        return delta


class StopWatch:
    """Whether a row's completion has produced one of its stop strings yet, checked token by token."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.longest = max(len(s) for s in stops)
        self.text = IncrementalText(tokenizer)

    def push(self, token: int) -> bool:
        """Add one id; True when a stop string now occurs in the text (searched only where it could be new)."""
        delta = self.text.push(token)
        if not delta:
            return False
        text = self.text.text
        tail = text[max(0, len(text) - len(delta) - self.longest + 1) :]
        return any(s in tail for s in self.stops)
