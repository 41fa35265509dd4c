"""Degenerate turns: a turn whose action the environment replaced (`Turn.fallback`, set by the recorder from the
final state's records naming the call) is off-format, in every environment."""

from __future__ import annotations

import itertools

from langgraph_omar.conversation import ScriptedChatModel
from langgraph_omar.envs.werewolf.graph import build_graph
from langgraph_omar.rl.config import DegenerateSettings
from langgraph_omar.rl.degenerate import mark_degenerate
from langgraph_omar.rollout import run_episodes
from langgraph_omar.trajectory import Episode, Turn


def turn(role: str, text: str, token: int) -> Turn:
    return Turn(role, role, text, [1], [token], [0.0])


def numbered_moves() -> ScriptedChatModel:
    """Says "move N" on its N-th call (a legal, if dull, speech; never a legal night action or vote), and leaves
    token records, so that a TraceRecorder records the calls as turns."""
    count = itertools.count(1)
    return ScriptedChatModel(respond=lambda messages: f"move {next(count)}", record_tokens=True)


def test_werewolf_fallbacks_flag_the_turns_of_the_replaced_calls_as_off_format() -> None:
    # A real (short) Werewolf game: every action turn is unparsable and falls back; every speech is accepted.
    graph = build_graph(numbered_moves(), rules={"max_rounds": 2})
    (episode,), _ = run_episodes(graph, [{"seed": 3}], progress=False)
    fallbacks = episode.metadata["fallbacks"]
    assert fallbacks and episode.status == "ok"
    # The recorder put each fallback on the turn of the call it replaced; turns are keyed by game role.
    replaced = {record["call_id"] for record in fallbacks}
    assert {t.run_id for t in episode.turns if t.fallback is not None} == replaced
    assert all(t.role == r["role"] for t in episode.turns for r in fallbacks if r["call_id"] == t.run_id)

    counts = mark_degenerate([episode], DegenerateSettings())

    flagged = {t.run_id for t in episode.turns if t.degenerate == "off_format"}
    assert flagged == replaced and counts["degenerate_off_format"] == len(fallbacks)
    assert all(t.degenerate is None for t in episode.turns if t.run_id not in replaced)


def test_off_format_reads_the_turn_alone() -> None:
    # Records in the episode's metadata that name no call (an old file, a graph of one's own) flag nothing:
    # the recorder, not the trainer, maps records onto turns, so the trainer knows no game's record shape.
    episode = Episode(
        "e",
        [turn("Werewolf", "KILL nobody", 5), turn("agent_1", "hmm", 6)],
        metadata={"fallbacks": [{"role": "Werewolf", "player": "Bram", "raw": "KILL nobody", "turn": 1}]},
    )
    episode.turns[1].fallback = "speak"
    mark_degenerate([episode], DegenerateSettings())
    assert [t.degenerate for t in episode.turns] == [None, "off_format"]


def test_a_text_only_turn_is_empty_only_when_its_text_is():
    # Another model's or a person's turn has no completion ids by design: that alone is not "empty".
    hosted = Turn("buyer", "buyer", "I offer 100.", [], [], [], source="model")
    blank = Turn("buyer", "buyer", "  ", [], [], [], source="human")
    episode = Episode("e", turns=[hosted, blank])
    mark_degenerate([episode], DegenerateSettings())
    assert [t.degenerate for t in episode.turns] == [None, "empty"]


def test_repeated_compares_an_agent_with_its_own_earlier_turns_only():
    # Two villagers (one role, two agents): Bo saying what Ada said is Bo's own move, not a loop; Ada saying it
    # again is. A role whose agent is the role itself still compares all its turns.
    speech = "I think the baker is lying about last night."
    turns = [turn("villager", speech, 1), turn("villager", speech, 2), turn("villager", speech, 3)]
    turns[0].agent, turns[1].agent, turns[2].agent = "Ada", "Bo", "Ada"
    solo = [turn("seer", speech, 4), turn("seer", speech, 5)]
    episode = Episode("e", turns=turns + solo)
    mark_degenerate([episode], DegenerateSettings())
    assert [t.degenerate for t in episode.turns] == [None, None, "repeated", None, "repeated"]
