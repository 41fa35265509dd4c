"""Degenerate turns: fallback records are matched to the turns of whoever spoke, in every environment's shape."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from langgraph_omar.envs.werewolf.graph import build_graph
from langgraph_omar.rl.config import DegenerateSettings
from langgraph_omar.rl.degenerate import fallback_texts, mark_degenerate
from langgraph_omar.trajectory import Episode, Turn


def turn(role: str, text: str, token: int) -> Turn:
    return Turn(role, role, text, [1], [token], [0.0])


class NumberedMoves(BaseChatModel):
    """Says "move N" on its N-th call (a legal, if dull, speech; never a legal night action or vote) and
    records (the caller's role, the answer) of every call, atomically: players may act in parallel."""

    said: list[tuple[str, str]] = Field(default_factory=list)
    lock: Any = Field(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "numbered-moves"

    def _generate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        with self.lock:
            text = f"move {len(self.said) + 1}"
            self.said.append((str(run_manager.metadata["role"]), text))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def test_werewolf_fallbacks_flag_the_players_turns_as_off_format() -> None:
    # A real (short) Werewolf game: every action turn is unparsable and falls back; every speech is accepted.
    model = NumberedMoves()
    final = build_graph(model, rules={"max_rounds": 2}).invoke({"seed": 3})
    fallbacks = final["fallbacks"]
    assert fallbacks and all(
        record["role"] != record["player"] for record in fallbacks
    )  # "Werewolf" vs "Bram"
    # The episode as the trace recorder exports it: one turn per call, named by the player (the node's role).
    turns = [turn(player, text, token) for token, (player, text) in enumerate(model.said, start=1)]
    episode = Episode("werewolf-3", turns, metadata={"fallbacks": fallbacks})

    counts = mark_degenerate([episode], DegenerateSettings())

    replaced = {(record["player"], record["raw"]) for record in fallbacks}
    flagged = {(t.role, t.text) for t in episode.turns if t.degenerate == "off_format"}
    assert flagged == replaced and counts["degenerate_off_format"] == len(fallbacks)
    assert all(t.degenerate is None for t in episode.turns if (t.role, t.text) not in replaced)


def test_a_record_is_matched_on_its_player_else_its_role() -> None:
    episode = Episode(
        "e",
        [turn("Bram", "KILL nobody", 5), turn("agent_1", "hmm", 6), turn("Werewolf", "KILL nobody", 7)],
        metadata={
            "fallbacks": [
                {"role": "Werewolf", "player": "Bram", "raw": "KILL  nobody", "turn": 1},  # Werewolf's shape
                {"role": "agent_1", "raw": "hmm", "turn": 2},  # a conversation graph's shape
            ]
        },
    )
    assert fallback_texts(episode) == {("Bram", "kill nobody"): 1, ("agent_1", "hmm"): 1}
    mark_degenerate([episode], DegenerateSettings())
    # The third turn has the fallback's text but is not Bram's: a role named like a game role is not matched.
    assert [t.degenerate for t in episode.turns] == ["off_format", "off_format", None]


def test_a_record_without_a_speaker_or_text_is_an_error() -> None:
    for record in ({"raw": "x"}, {"player": "Bram"}):
        with pytest.raises(
            ValueError, match=r"metadata.fallbacks\[0\] must be a dict with 'raw' and 'player'"
        ):
            mark_degenerate([Episode("x", [], metadata={"fallbacks": [record]})], DegenerateSettings())


def test_a_text_only_turn_is_empty_only_when_its_text_is():
    # Another model's or a person's turn has no completion ids by design: that alone is not "empty".
    hosted = Turn("buyer", "buyer", "I offer 100.", [], [], [], source="model")
    blank = Turn("buyer", "buyer", "  ", [], [], [], source="human")
    episode = Episode("e", turns=[hosted, blank])
    mark_degenerate([episode], DegenerateSettings())
    assert [t.degenerate for t in episode.turns] == [None, "empty"]
