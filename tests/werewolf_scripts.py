"""Scripted Werewolf players for tests: a script of moves, and chat models that play it from the prompts alone."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage

from langgraph_omar.conversation import ScriptedChatModel
from langgraph_omar.envs.werewolf.config import WerewolfConfig, load_werewolf_config
from langgraph_omar.envs.werewolf.state import Observation
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.testing import tiny_model, tiny_tokenizer

TINY_WEREWOLF = "tiny-werewolf"  # ChatPolicy(model=TINY_WEREWOLF) once the fixture below registered it

# The reference roster (and a self-contained copy of its shape, to run without ../shared):
# Aurora Villager, Bram Werewolf, Celeste Seer, Dorian Werewolf, Elise Witch, Finn Villager.
ROSTER = [
    ("Aurora", "Villager"),
    ("Bram", "Werewolf"),
    ("Celeste", "Seer"),
    ("Dorian", "Werewolf"),
    ("Elise", "Witch"),
    ("Finn", "Villager"),
]

Script = dict[tuple[int, str, str], str]  # (round, kind, player) -> what the player says


def six_players(tmp_path: Path, **rules: Any) -> WerewolfConfig:
    data = {"agents": [{"name": n, "role": r} for n, r in ROSTER], "rules": rules}
    path = tmp_path / "six.json"
    path.write_text(json.dumps(data))
    return load_werewolf_config(path)


def scripted(
    script: Script, default: Callable[[Observation], str] | None = None
) -> Callable[[Observation], str]:
    """A decide function: the script's line, else `default`, else a harmless default for the kind."""

    def decide(observation: Observation) -> str:
        key = (observation["round"], observation["kind"], observation["player"])
        if key in script:
            return script[key]
        if default is not None:
            return default(observation)
        verb = {"kill": "KILL", "inspect": "INSPECT", "protect": "PROTECT"}.get(observation["kind"])
        if verb is not None:  # the first legal target: deterministic and never a fallback
            return f"{verb} {observation['legal'][verb][0]}"
        return {"vote": "ABSTAIN", "witch": "PASS"}.get(observation["kind"], "I have nothing to add.")

    return decide


# A game the village wins in round 2 (the derivations of the expected values are in the tests below).
VILLAGE_WINS: Script = {
    (1, "wolf_chat", "Bram"): "WOLFSECRET let us take Aurora",
    (1, "kill", "Bram"): "KILL Aurora",
    (1, "kill", "Dorian"): "KILL Aurora",
    (1, "inspect", "Celeste"): "INSPECT Bram",
    **{(1, "vote", p): "VOTE Bram" for p in ("Celeste", "Elise", "Finn")},
    (1, "vote", "Bram"): "VOTE Celeste",
    (1, "vote", "Dorian"): "VOTE Celeste",
    (2, "kill", "Dorian"): "KILL Celeste",
    (2, "inspect", "Celeste"): "INSPECT Dorian",
    (2, "witch", "Elise"): "SAVE",
    **{(2, "vote", p): "VOTE Dorian" for p in ("Celeste", "Elise")},
    (2, "vote", "Finn"): "VOTE Elise",
    (2, "vote", "Dorian"): "VOTE Celeste",
}


def _kind_of(human: str) -> str:
    request = human.rsplit("Now (", 1)[1]
    for marker, kind in [("KILL NAME", "kill"), ("INSPECT NAME", "inspect"), ("PROTECT NAME", "protect"),
                         ("VOTE NAME", "vote"), ("PASS (do nothing", "witch"), ("fellow werewolves", "wolf_chat")]:  # fmt: skip
        if marker in request:
            return kind
    return "speak"


def _legal_of(human: str, kind: str) -> dict[str, list[str]]:
    """The legal targets the prompt lists ('You may inspect: A, B.'), as the scripted default needs them."""
    verb = {"kill": "KILL", "inspect": "INSPECT", "protect": "PROTECT", "vote": "VOTE"}.get(kind)
    listed = re.search(r"(?:victims|inspect|protect|vote for): ([^.]*)\.$", human)
    return {verb: listed.group(1).split(", ")} if verb and listed else {}


def prompt_view(messages: list[BaseMessage]) -> dict[str, Any]:
    """What a scripted player reads from its prompt: its name, the round, the kind of decision, legal targets."""
    system, human = str(messages[0].content), str(messages[-1].content)
    player = re.search(r"You are (\w+)\.", system).group(1)  # type: ignore[union-attr]
    round_ = int(re.search(r"Now \(\w+ (\d+)\)", human).group(1))  # type: ignore[union-attr]
    kind = _kind_of(human)
    return {"player": player, "round": round_, "kind": kind, "legal": _legal_of(human, kind)}


def scripted_model(script: Script) -> ScriptedChatModel:
    """Plays `script` (else `scripted`'s harmless defaults) for every player; leaves token records, so that a
    TraceRecorder records its calls as turns."""
    decide = scripted(script)
    return ScriptedChatModel(respond=lambda messages: decide(prompt_view(messages)), record_tokens=True)  # type: ignore[arg-type]


@pytest.fixture
def werewolf_engine() -> SharedPolicy:
    """A tiny model with room for a Werewolf prompt (the rules and the game so far: about 2000 of its tokens)."""
    policy = SharedPolicy(TINY_WEREWOLF, tiny_model(0, context=4096), tiny_tokenizer(), max_wait_ms=5)
    SharedPolicy.register(policy)
    return policy
