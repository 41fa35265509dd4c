"""Werewolf: config loading, rules (scripted games, no model), visibility, rewards and the LangGraph graph."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from werewolf_scripts import ROSTER, VILLAGE_WINS, Script, prompt_view, scripted, six_players

from langgraph_omar.envs.werewolf.behaviour import behaviour_scores
from langgraph_omar.envs.werewolf.config import (
    WerewolfConfigError,
    WerewolfRules,
    bundled_config_path,
    load_werewolf_config,
)
from langgraph_omar.envs.werewolf.graph import build_graph
from langgraph_omar.envs.werewolf.rewards import aggregate_metrics, elimination_factor, player_rewards
from langgraph_omar.envs.werewolf.rules import play_game
from langgraph_omar.envs.werewolf.state import Observation

SHARED = Path(__file__).parents[1].parent / "shared" / "data" / "werewolf"
REFERENCE = SHARED / "games_werewolves_config.json"
needs_shared = pytest.mark.skipif(not REFERENCE.is_file(), reason=f"reference data not found at {SHARED}")
# ---------------------------------------------------------------- config


@needs_shared
def test_reference_config_loads_from_its_two_files() -> None:
    config = load_werewolf_config(REFERENCE)  # the roster is found beside it: games_werewolves_roster.json
    assert config.players == tuple(n for n, _ in ROSTER)
    assert dict(config.roles) == dict(ROSTER)
    assert config.phase_cycle == ("Night_werewolf", "Night_seer", "Night_witch", "Day_discussion", "Day_vote")
    assert config.witch_save_available and config.witch_poison_available
    assert [c["type"] for c in config.end_conditions] == ["team_eliminated", "parity"]
    assert "Aurora, Bram, Celeste, Dorian, Elise, Finn" in config.describe()


@needs_shared
def test_reference_game_plays_to_the_known_end() -> None:
    final = play_game(load_werewolf_config(REFERENCE), scripted(VILLAGE_WINS))
    assert final["winner"] == "Villagers"


@pytest.mark.parametrize(
    ("name", "players", "special"),
    [("classic_6", 6, "Witch"), ("doctor_7", 7, "Doctor"), ("guard_8", 8, "Guard"), ("guard_9", 9, "Guard")],
)
def test_bundled_configs_load(name: str, players: int, special: str) -> None:
    config = load_werewolf_config(bundled_config_path(name))
    assert len(config.players) == players and special in config.roles.values()
    assert f"Night_{special.lower()}" in config.phase_cycle


def _write(tmp_path: Path, data: Any, name: str = "bad.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _agents(*roles: str) -> list[dict[str, str]]:
    return [{"name": f"P{i}", "role": role} for i, role in enumerate(roles)]


REFERENCE_CYCLE = {
    "Night_werewolf": "Night_seer",
    "Night_seer": "Night_witch",
    "Night_witch": "Day_discussion",
    "Day_discussion": "Day_vote",
    "Day_vote": "Night_werewolf",
}
SIX = ("Villager", "Werewolf", "Seer", "Werewolf", "Witch", "Villager")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"agents": _agents(*SIX[:5], "Vampire")}, "agents[5].role: unknown role 'Vampire'"),
        ({"agents": _agents("Werewolf", "Seer")}, "agents: expected at least 3 players, got 2"),
        (
            {"agents": _agents("Werewolf", "Werewolf", "Werewolf", "Villager", "Villager", "Seer")},
            "fewer werewolves",
        ),
        ({"agents": [{"name": "A", "role": "Seer"}] * 6}, "agents[1].name: duplicate player name 'A'"),
        ({"agents": [{**a, "team": "Werewolves"} for a in _agents(*SIX)]}, "agents[0].team"),
        ({"agents": _agents(*SIX), "rules": {"vote_ties": "random"}}, "rules.vote_ties: unknown rule"),
        ({"agents": _agents(*SIX), "rules": {"vote_tie": "coin"}}, "rules.vote_tie: expected one of"),
        ({"agents": _agents(*SIX), "rules": {"elimination_discount": 2}}, "elimination_discount"),
        (
            {"agents": _agents(*SIX[:4], "Doctor", "Villager"), "state_transition": REFERENCE_CYCLE},
            "has a Doctor but no Night_doctor",
        ),
        (
            {
                "agents": _agents(*SIX),
                "state_transition": {"Night_werewolf": "Day_vote", "Day_vote": "Night_dusk"},
            },
            "unknown phase 'Night_dusk'",
        ),
        (
            {
                "agents": _agents(*SIX),
                "state_transition": {
                    "Night_werewolf": "Day_vote",
                    "Day_vote": "Night_werewolf",
                    "Night_seer": "Day_vote",
                },
            },
            "phases outside the cycle",
        ),
        ({"agents": _agents(*SIX), "end_conditions": [{"type": "sudden_death"}]}, "end_conditions[0].type"),
        ({"agents": "everyone"}, "agents: expected a list"),
        ([1, 2], "expected an object at the top level"),
        ('{"agents": [\n  {"name": "A",}\n]}', "line 2: invalid JSON"),
    ],
)
def test_bad_configs_get_one_line_errors_naming_file_and_key(tmp_path: Path, data: Any, message: str) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(WerewolfConfigError) as caught:
        load_werewolf_config(path)
    assert message in str(caught.value) and str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_missing_roster_file_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, {"description": "x"}, "my_config.json")
    with pytest.raises(WerewolfConfigError, match="my_roster.json does not exist"):
        load_werewolf_config(path)


def test_yaml_config_and_rule_overrides(tmp_path: Path) -> None:
    lines = (
        ["agents:"] + [f"  - {{name: {n}, role: {r}}}" for n, r in ROSTER] + ["rules:", "  vote_tie: random"]
    )
    path = _write(tmp_path, "\n".join(lines), "six.yaml")
    config = load_werewolf_config(path, rules={"max_rounds": 3})
    assert config.rules.vote_tie == "random" and config.rules.max_rounds == 3
    assert config.phase_cycle[0] == "Night_werewolf"  # the default cycle built from the roster


def test_rules_validation() -> None:
    with pytest.raises(ValueError, match="discussion_rounds"):
        WerewolfRules(discussion_rounds=-1)
    with pytest.raises(ValueError, match="fallback"):
        WerewolfRules(fallback="guess")


# ---------------------------------------------------------------- rules (pure, scripted players)


def test_known_village_win(tmp_path: Path) -> None:
    final = play_game(six_players(tmp_path), scripted(VILLAGE_WINS))
    # Night 1: Aurora killed. Day 1: Bram 3 votes (Celeste, Elise, Finn) vs Celeste 2: Bram exiled.
    # Night 2: Celeste attacked but saved by the witch. Day 2: Dorian 2 votes vs Elise 1, Celeste 1: exiled.
    assert final["winner"] == "Villagers" and final["round"] == 2
    assert final["alive"] == ["Celeste", "Elise", "Finn"]
    assert final["eliminated"] == {
        "Aurora": {"round": 1, "cause": "werewolves"},
        "Bram": {"round": 1, "cause": "vote"},
        "Dorian": {"round": 2, "cause": "vote"},
    }
    assert final["witch_save_available"] is False and final["witch_poison_available"] is True
    # Rewards: winners alive at the end get +1; Aurora (village) died in round 1 of 2: 0.9 ** (2 - 1) = 0.9;
    # werewolves lost: -1 each (the discount never softens a loss).
    assert final["agent_rewards"] == pytest.approx(
        {"Aurora": 0.9, "Bram": -1.0, "Celeste": 1.0, "Dorian": -1.0, "Elise": 1.0, "Finn": 1.0}
    )
    # Per game role, what trajectories are keyed by: the mean of its players' (villagers: (0.9 + 1) / 2).
    assert final["rewards"] == pytest.approx({"Villager": 0.95, "Werewolf": -1.0, "Seer": 1.0, "Witch": 1.0})
    metrics = final["metrics"]
    assert metrics["win_rate"] == {"Villagers": 1.0, "Werewolves": 0.0}
    # Seer inspected Bram then Dorian: 2 hits of 2.
    assert (metrics["seer_inspections"], metrics["seer_accuracy"]) == (2, 1.0)
    # Village votes: day 1 three on Bram; day 2 Celeste and Elise on Dorian, Finn on Elise: 5 of 6.
    assert (metrics["villager_votes"], metrics["vote_accuracy"]) == (6, pytest.approx(5 / 6))
    assert metrics["fallbacks"] == 0 and final["fallbacks"] == []
    assert metrics["fallbacks_by_role"] == {"Villager": 0, "Werewolf": 0, "Seer": 0, "Witch": 0}  # all, 0 too


def test_known_werewolf_win_on_parity(tmp_path: Path) -> None:
    script: Script = {
        (1, "kill", "Bram"): "KILL Aurora",
        (1, "kill", "Dorian"): "KILL Aurora",
        (2, "kill", "Bram"): "KILL Finn",
        (2, "kill", "Dorian"): "KILL Finn",
    }  # everyone abstains by day: nobody is exiled
    final = play_game(six_players(tmp_path), scripted(script))
    # After night 2: Bram, Celeste, Dorian, Elise alive: 2 werewolves >= 2 others.
    assert final["winner"] == "Werewolves" and final["round"] == 2
    assert final["agent_rewards"] == {
        "Aurora": -1.0,
        "Bram": 1.0,
        "Celeste": -1.0,
        "Dorian": 1.0,
        "Elise": -1.0,
        "Finn": -1.0,
    }
    assert final["rewards"] == {"Villager": -1.0, "Werewolf": 1.0, "Seer": -1.0, "Witch": -1.0}
    assert "Votes: none. Abstained: Bram, Celeste, Dorian, Elise, Finn. Nobody is exiled." in _texts(final)


def _texts(state: Any) -> list[str]:
    return [e["text"] for e in state["events"]]


def test_each_player_sees_only_what_it_may(tmp_path: Path) -> None:
    seen: dict[str, list[Observation]] = {}

    def decide(observation: Observation) -> str:
        seen.setdefault(observation["player"], []).append(observation)
        return scripted(VILLAGE_WINS)(observation)

    play_game(six_players(tmp_path), decide)
    for player, observations in seen.items():
        text = "\n".join("\n".join(o["events"]) for o in observations)
        wolf = player in ("Bram", "Dorian")
        assert ("WOLFSECRET" in text) == wolf  # the werewolves' channel
        assert ("The werewolves attack Aurora tonight." in text) == wolf
        assert ("Your inspection: Bram is a werewolf." in text) == (player == "Celeste")
        assert ("The werewolves attacked Celeste tonight." in text) == (player == "Elise")  # the witch's news
        assert all(
            o["teammates"] == (["Dorian"] if player == "Bram" else ["Bram"] if wolf else [])
            for o in observations
        )
        assert {o["role"] for o in observations} == {dict(ROSTER)[player]}


def test_werewolf_disagreement_rules(tmp_path: Path) -> None:
    split: Script = {(1, "kill", "Bram"): "KILL Finn", (1, "kill", "Dorian"): "KILL Aurora"}
    first = play_game(six_players(tmp_path, werewolf_disagreement="first", max_rounds=1), scripted(split))
    assert first["eliminated"] == {"Finn": {"round": 1, "cause": "werewolves"}}  # Bram sits before Dorian
    no_kill = play_game(six_players(tmp_path, werewolf_disagreement="no_kill", max_rounds=1), scripted(split))
    assert no_kill["eliminated"] == {} and "The werewolves attack nobody tonight." in _texts(no_kill)
    random_rule = six_players(tmp_path, werewolf_disagreement="random", max_rounds=1)
    outcomes = [play_game(random_rule, scripted(split), seed=s)["eliminated"] for s in (0, 0, 1, 2, 3, 4, 5)]
    assert outcomes[0] == outcomes[1]  # seeded
    assert all(list(o) in (["Aurora"], ["Finn"]) for o in outcomes)


def test_vote_tie_rules(tmp_path: Path) -> None:
    tie: Script = {
        **{(1, "vote", p): "VOTE Bram" for p in ("Celeste", "Elise")},  # Aurora died in the night
        **{(1, "vote", p): "VOTE Finn" for p in ("Bram", "Dorian")},
    }
    default = play_game(six_players(tmp_path, max_rounds=1), scripted(tie))
    assert list(default["eliminated"]) == ["Aurora"]  # the night's victim only
    assert "Tie between Bram, Finn: nobody is exiled." in " ".join(_texts(default))
    by_lot = six_players(tmp_path, max_rounds=1, vote_tie="random")
    exiled = [[p for p, e in play_game(by_lot, scripted(tie), seed=s)["eliminated"].items() if e["cause"] == "vote"]
              for s in (4, 4, 5, 6, 7)]  # fmt: skip
    assert exiled[0] == exiled[1] and all(e in (["Bram"], ["Finn"]) for e in exiled)


def test_witch_has_one_save_and_one_poison(tmp_path: Path) -> None:
    script: Script = {
        (1, "kill", "Bram"): "KILL Aurora",
        (1, "kill", "Dorian"): "KILL Aurora",
        (1, "witch", "Elise"): "SAVE Aurora",
        (2, "kill", "Bram"): "KILL Finn",
        (2, "kill", "Dorian"): "KILL Finn",
        (2, "witch", "Elise"): "SAVE Finn",  # the save potion is gone: fallback PASS, Finn dies
        (3, "witch", "Elise"): "POISON Bram",
    }
    final = play_game(six_players(tmp_path, max_rounds=4), scripted(script))
    assert "Day 1 dawns. Nobody died during the night." in _texts(final)  # Aurora was saved
    assert final["eliminated"]["Finn"] == {"round": 2, "cause": "werewolves"}
    assert final["eliminated"]["Bram"] == {"round": 3, "cause": "poison"}
    (fallback,) = final["fallbacks"]
    assert fallback == {
        "role": "Witch", "player": "Elise", "turn": fallback["turn"], "raw": "SAVE Finn", "fallback": "PASS",
        "reason": "SAVE is not available now (legal: ['PASS', 'POISON'])", "action": {"type": "PASS", "target": None},
    }  # fmt: skip
    assert final["metrics"]["fallbacks"] == 1
    witch_turns = [a["round"] for a in final["actions"] if a["kind"] == "witch"]
    assert witch_turns == [1, 2, 3]  # both potions spent in round 3: the witch is not woken in round 4
    moves = final["metrics"]["moves_by_role"]
    assert moves["Witch"] == 6  # three potion turns and three day votes; speeches are no moves
    assert final["metrics"]["fallbacks_by_role"]["Witch"] == 1


def test_doctor_protection(tmp_path: Path) -> None:
    # doctor_7: Ada Villager, Basil Werewolf, Cora Seer, Dmitri Doctor, Esme Werewolf, Felix and Greta Villagers.
    script: Script = {
        (1, "kill", "Basil"): "KILL Ada",
        (1, "kill", "Esme"): "KILL Ada",
        (1, "protect", "Dmitri"): "PROTECT Ada",
        (2, "kill", "Basil"): "KILL Ada",
        (2, "kill", "Esme"): "KILL Ada",
        (2, "protect", "Dmitri"): "PROTECT Ada",  # a doctor may repeat
    }
    final = play_game(
        load_werewolf_config(bundled_config_path("doctor_7"), rules={"max_rounds": 2}), scripted(script)
    )
    assert "Ada" not in final["eliminated"] and "Nobody died during the night." in " ".join(_texts(final))
    assert final["fallbacks"] == []
    strict = load_werewolf_config(bundled_config_path("doctor_7"), rules={"doctor_can_self_protect": False})
    protect_turns: list[dict[str, list[str]]] = []

    def record_protect_turns(observation: Observation) -> str:
        if observation["kind"] == "protect":
            protect_turns.append(observation["legal"])
        return scripted({})(observation)

    play_game(strict, record_protect_turns)
    assert protect_turns and all("Dmitri" not in legal["PROTECT"] for legal in protect_turns)


def test_guard_cannot_protect_the_same_player_two_nights_running(tmp_path: Path) -> None:
    config = load_werewolf_config(bundled_config_path("guard_8"), rules={"max_rounds": 3})
    script: Script = {
        **{(1, "kill", w): "KILL Ada" for w in ("Basil", "Felix")},
        (1, "protect", "Dmitri"): "PROTECT Ada",
        **{(2, "kill", w): "KILL Ada" for w in ("Basil", "Felix")},
        (2, "protect", "Dmitri"): "PROTECT Ada",  # illegal: fallback to a random other player
        (3, "protect", "Dmitri"): "PROTECT Hugo",
    }
    legal_by_round: dict[int, list[str]] = {}

    def decide(observation: Observation) -> str:
        if observation["kind"] == "protect":
            legal_by_round[observation["round"]] = observation["legal"]["PROTECT"]
        return scripted(script)(observation)

    final = play_game(config, decide)
    assert "Ada" in legal_by_round[1] and "Ada" not in legal_by_round[2]
    assert final["eliminated"]["Ada"] == {"round": 2, "cause": "werewolves"}  # night 1 guarded, night 2 not
    (fallback,) = final["fallbacks"]
    assert (
        fallback["role"] == "Guard"
        and fallback["raw"] == "PROTECT Ada"
        and "not allowed" in fallback["reason"]
    )


def test_garbage_gets_recorded_fallbacks(tmp_path: Path) -> None:
    final = play_game(
        six_players(tmp_path, max_rounds=3), lambda o: "" if o["kind"] == "speak" else "%%garbage%%"
    )
    assert final["fallbacks"] and final["metrics"]["fallbacks"] == len(final["fallbacks"])
    reasons = {f["reason"] for f in final["fallbacks"]}
    assert "empty speech" in reasons and any(r.startswith("unparsable") for r in reasons)
    witch_turns = {a["step"] for a in final["actions"] if a["kind"] == "witch"}
    assert witch_turns and {f["fallback"] for f in final["fallbacks"] if f["turn"] in witch_turns} == {"PASS"}
    records = [a for a in final["actions"] if a["kind"] in ("kill", "vote") and a["fallback"]]
    assert records and all(a["target"] is not None for a in records)  # 'random' mode picked legal targets


def test_abstain_fallback_and_draw_after_max_rounds(tmp_path: Path) -> None:
    final = play_game(six_players(tmp_path, fallback="abstain", max_rounds=2), lambda o: "???")
    # Nobody kills (every wolf abstains) and nobody is exiled: after 2 rounds the game is a draw.
    assert final["winner"] is None and final["eliminated"] == {} and final["metrics"]["draw"] is True
    assert final["round"] == 2 and final["events"][-1]["text"].endswith("after 2 rounds: the game is a draw.")
    assert set(final["rewards"].values()) == {0.0}
    assert (
        final["metrics"]["winner"] == "draw" and final["metrics"]["fallbacks"] == len(final["fallbacks"]) > 0
    )


def test_shuffled_roles_are_seeded(tmp_path: Path) -> None:
    config = six_players(tmp_path, shuffle_roles=True, max_rounds=1)
    deal = [play_game(config, lambda o: "???", seed=s)["roles"] for s in (7, 7, 8)]
    assert deal[0] == deal[1] and sorted(deal[2].values()) == sorted(r for _, r in ROSTER)


# ---------------------------------------------------------------- rewards and metrics


def test_elimination_discount_schemes() -> None:
    assert elimination_factor(2, 0.9, "exponential") == pytest.approx(0.81)  # 0.9 ** 2
    assert elimination_factor(2, 0.9, "linear") == pytest.approx(0.8)  # 1 - 0.1 * 2
    assert elimination_factor(20, 0.9, "linear") == 0.0  # clipped at 0
    assert elimination_factor(5, 0.5, "none") == 1.0


def test_player_rewards_hand_computed() -> None:
    roles = {"A": "Villager", "B": "Werewolf", "C": "Seer"}
    eliminated = {"A": {"round": 1, "cause": "werewolves"}, "B": {"round": 3, "cause": "vote"}}
    rules = WerewolfRules(win_reward=1.0, loss_reward=0.0, elimination_discount=0.5)
    # Game ends in round 3: A missed 2 rounds -> 0.5 ** 2; B lost -> 0; C survived -> 1.
    assert player_rewards(roles, eliminated, "Villagers", 3, rules) == {"A": 0.25, "B": 0.0, "C": 1.0}  # type: ignore[arg-type]
    assert set(player_rewards(roles, eliminated, None, 3, rules).values()) == {0.0}  # type: ignore[arg-type]


def test_aggregate_metrics_pools_games() -> None:
    game = {"winner": "Villagers", "draw": False, "seer_inspections": 2, "seer_hits": 1, "villager_votes": 4,
            "villager_votes_on_werewolves": 3, "fallbacks": 1, "decisions": 10}  # fmt: skip
    other = {**game, "winner": "Werewolves", "seer_inspections": 2, "seer_hits": 2, "villager_votes": 0,
             "villager_votes_on_werewolves": 0, "fallbacks": 0}  # fmt: skip
    pooled = aggregate_metrics([game, other])
    assert pooled["win_rate"] == {"Villagers": 0.5, "Werewolves": 0.5}
    assert pooled["seer_accuracy"] == 0.75  # (1 + 2) / (2 + 2)
    assert pooled["vote_accuracy"] == 0.75  # (3 + 0) / (4 + 0)
    assert pooled["fallback_rate"] == 0.05  # 1 / 20


# ---------------------------------------------------------------- the LangGraph graph


class ScriptedChat(BaseChatModel):
    """Answers from a decide function of what the prompt shows; records every prompt it received."""

    decide: Any
    calls: list = []

    @property
    def _llm_type(self) -> str:
        return "scripted-werewolf"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        view = prompt_view(messages)
        self.calls.append((view["player"], str(messages[0].content), str(messages[-1].content)))
        answer = self.decide(view["player"], view["kind"], view["round"], view["legal"])
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=answer))])


def _chat_from(script: Script) -> ScriptedChat:
    def decide(player: str, kind: str, round_: int, legal: dict[str, list[str]]) -> str:
        observation = {"player": player, "kind": kind, "round": round_, "legal": legal}
        return scripted(script)(observation)  # type: ignore[arg-type]

    return ScriptedChat(decide=decide, calls=[])


class RoleSpy(BaseCallbackHandler):
    def __init__(self) -> None:
        self.roles: list[str | None] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, *, metadata: Any = None, **kw: Any) -> None:
        self.roles.append((metadata or {}).get("role"))


def test_graph_plays_the_known_game_like_the_pure_engine(tmp_path: Path) -> None:
    config = six_players(tmp_path)
    model = _chat_from(VILLAGE_WINS)
    spy = RoleSpy()
    final = build_graph(model, config).invoke({}, {"callbacks": [spy]})
    expected = play_game(config, scripted(VILLAGE_WINS))
    for key in ("winner", "rewards", "metrics", "eliminated", "fallbacks", "alive"):
        assert final[key] == expected[key], key
    assert _texts(final) == _texts(expected)
    # Every model call carried the game role of the player whose prompt it was.
    assert spy.roles == [dict(ROSTER)[player] for player, _, _ in model.calls]


def test_graph_prompts_hold_only_the_players_own_view(tmp_path: Path) -> None:
    model = _chat_from(VILLAGE_WINS)
    build_graph(model, six_players(tmp_path)).invoke({})
    roles = dict(ROSTER)
    for player, system, human in model.calls:
        prompt = system + human
        assert f"Your secret role: {roles[player]}." in prompt
        assert prompt.count("Your secret role:") == 1
        wolf = roles[player] == "Werewolf"
        assert ("WOLFSECRET" in prompt) == (wolf and "Night 1, werewolves only" in human)
        assert "fellow werewolves: " in prompt if wolf else "fellow werewolves" not in system
        assert "Bram is a werewolf" not in prompt or player == "Celeste"


def test_graph_nodes_carry_the_player_role(tmp_path: Path) -> None:
    graph = build_graph(_chat_from({}), six_players(tmp_path))
    nodes = graph.get_graph().nodes
    assert {n: nodes[n].metadata for n in nodes if n.startswith("player_")} == {
        f"player_{name}": {"player": name} for name, _ in ROSTER
    }
    assert {
        "Night_werewolf",
        "Night_seer",
        "Night_witch",
        "dawn",
        "Day_discussion",
        "Day_vote",
        "finish",
    } <= set(nodes)


def test_graph_async_with_seed_input_and_garbage_output(tmp_path: Path) -> None:
    garbage = ScriptedChat(decide=lambda *args: "%%%", calls=[])
    graph = build_graph(garbage, six_players(tmp_path, max_rounds=3))
    final = asyncio.run(graph.ainvoke({"seed": 5}))
    assert final["seed"] == 5 and final["finished"] is True
    assert final["fallbacks"] and final["metrics"]["fallbacks"] == len(final["fallbacks"])
    assert (
        set(final["rewards"]) == {r for _, r in ROSTER} and set(final["agent_rewards"]) == dict(ROSTER).keys()
    )
    again = asyncio.run(graph.ainvoke({"seed": 5}))

    def moves(fallbacks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in f.items() if k != "call_id"} for f in fallbacks]  # the calls' ids are new

    assert moves(again["fallbacks"]) == moves(final["fallbacks"])  # seeded random fallbacks


def test_longest_nine_player_game_fits_the_recursion_limit() -> None:
    config = load_werewolf_config(bundled_config_path("guard_9"), rules={"fallback": "abstain"})
    final = build_graph(ScriptedChat(decide=lambda *a: "x", calls=[]), config).invoke({})
    assert final["winner"] is None and final["round"] == config.rules.max_rounds  # nobody ever dies: a draw


def test_model_mapping_must_cover_every_player(tmp_path: Path) -> None:
    with pytest.raises(WerewolfConfigError, match="no chat model for player"):
        build_graph({"Aurora": _chat_from({})}, six_players(tmp_path))


# ---------------------------------------------------------------- exile rule and roster sizes


def _exiled(state: Any) -> list[str]:
    return [p for p, e in state["eliminated"].items() if e["cause"] == "vote"]


def test_majority_exile_needs_more_than_half_of_the_living(tmp_path: Path) -> None:
    # Night 1 kills Aurora (the default first legal victim): 5 alive on day 1, so a majority is 3 votes.
    plurality: Script = {(1, "vote", p): "VOTE Bram" for p in ("Celeste", "Elise")}  # 2 votes, 3 abstain
    majority: Script = {**plurality, (1, "vote", "Finn"): "VOTE Bram"}  # 3 votes
    cases = [
        ("plurality", plurality, ["Bram"]),
        ("majority", plurality, []),
        ("majority", majority, ["Bram"]),
    ]
    for exile, script, exiled in cases:
        final = play_game(six_players(tmp_path, exile=exile, max_rounds=1), scripted(script))
        assert _exiled(final) == exiled, (exile, script)
    final = play_game(six_players(tmp_path, exile="majority", max_rounds=1), scripted(plurality))
    assert "Nobody has a majority (3 of 5 votes): nobody is exiled." in " ".join(_texts(final))
    with pytest.raises(ValueError, match=r"exile: expected one of \['plurality', 'majority'\]"):
        WerewolfRules(exile="unanimity")


@pytest.mark.parametrize(
    "roles",
    [
        ("Werewolf", "Villager", "Villager"),  # the fewest players the roles allow
        ("Villager", "Werewolf", "Seer", "Werewolf", "Witch"),
        ("Werewolf", "Seer", "Witch", *["Villager"] * 6, "Werewolf", "Villager", "Werewolf"),  # twelve
    ],
)
def test_any_roster_the_roles_allow_plays_to_the_end(tmp_path: Path, roles: tuple[str, ...]) -> None:
    config = load_werewolf_config(_write(tmp_path, {"agents": _agents(*roles)}))
    final = play_game(config, scripted({}))  # wolves kill the first villager each night; nobody votes
    assert final["winner"] == "Werewolves" and set(final["rewards"]) == set(roles)


# ---------------------------------------------------------------- behaviour-level rewards (MARO)


def _scores(state: Any) -> list[tuple[int, str, str | None, str | None, float]]:
    return [
        (a["round"], a["player"], a["verb"], a["target"], score) for a, score, _ in behaviour_scores(state)
    ]


def test_behaviour_scores_of_the_known_village_win(tmp_path: Path) -> None:
    final = play_game(six_players(tmp_path), scripted(VILLAGE_WINS))
    # Night 1: both werewolves' attack on Aurora killed her (+1 each); the seer found Bram (+1); the witch
    # passed (0). Day 1: the village's three votes on Bram and the werewolves' two on Celeste are each against
    # the other team (+1). Night 2: Dorian's attack on Celeste was stopped (0); the seer found Dorian (+1); the
    # witch's potion saved the attacked Celeste, whom nobody protected (+1). Day 2: Finn voted for Elise, a
    # teammate (-1); the other votes went across (+1).
    assert _scores(final) == [
        (1, "Bram", "KILL", "Aurora", 1.0),
        (1, "Dorian", "KILL", "Aurora", 1.0),
        (1, "Celeste", "INSPECT", "Bram", 1.0),
        (1, "Bram", "VOTE", "Celeste", 1.0),
        (1, "Celeste", "VOTE", "Bram", 1.0),
        (1, "Dorian", "VOTE", "Celeste", 1.0),
        (1, "Elise", "VOTE", "Bram", 1.0),
        (1, "Finn", "VOTE", "Bram", 1.0),
        (2, "Celeste", "INSPECT", "Dorian", 1.0),
        (2, "Elise", "SAVE", "Celeste", 1.0),
        (2, "Celeste", "VOTE", "Dorian", 1.0),
        (2, "Dorian", "VOTE", "Celeste", 1.0),
        (2, "Elise", "VOTE", "Dorian", 1.0),
        (2, "Finn", "VOTE", "Elise", -1.0),
    ]


def test_behaviour_scores_of_protections_poisons_and_fallbacks(tmp_path: Path) -> None:
    script: Script = {
        **{(1, "kill", w): "KILL Ada" for w in ("Basil", "Esme")},
        (1, "protect", "Dmitri"): "PROTECT Ada",  # the attacked player: +1, the attack failed (kills 0)
        (1, "inspect", "Cora"): "INSPECT Felix",  # not a werewolf: 0
        **{(2, "kill", w): "KILL Greta" for w in ("Basil", "Esme")},
        (2, "protect", "Dmitri"): "PROTECT Cora",  # not attacked: 0; Greta dies (+1 per werewolf)
        (2, "inspect", "Cora"): "INSPECT Nobody",  # unparsable: a random fallback inspection scores 0
    }
    config = load_werewolf_config(bundled_config_path("doctor_7"), rules={"max_rounds": 2})
    scored = [s for s in _scores(play_game(config, scripted(script))) if s[2] != "VOTE"]
    assert scored == [
        (1, "Dmitri", "PROTECT", "Ada", 1.0),
        (2, "Basil", "KILL", "Greta", 1.0),
        (2, "Esme", "KILL", "Greta", 1.0),
    ]
    poison: Script = {(1, "witch", "Elise"): "POISON Finn", (2, "witch", "Elise"): "POISON Bram"}
    witch = [
        s
        for s in _scores(play_game(six_players(tmp_path, max_rounds=2), scripted(poison)))
        if s[1] == "Elise"
    ]
    assert witch == [(1, "Elise", "POISON", "Finn", -1.0)]  # a villager; the poison is spent by night 2


def test_behaviour_rewards_are_validated() -> None:
    with pytest.raises(ValueError, match="behaviour_rewards: expected a number >= 0"):
        WerewolfRules(behaviour_rewards=-0.5)


def test_the_move_pattern_matches_exactly_the_legal_moves() -> None:
    import re

    from langgraph_omar.envs.werewolf.actions import move_pattern

    vote = move_pattern({"VOTE": ["Ada", "Bram"], "ABSTAIN": []})
    assert all(re.fullmatch(vote, move) for move in ("VOTE Ada", "VOTE Bram", "ABSTAIN"))
    assert not any(re.fullmatch(vote, move) for move in ("VOTE Cora", "VOTE", "ABSTAIN Ada", "vote Ada"))
    witch = move_pattern({"PASS": [], "SAVE": ["Ada"], "POISON": ["Bram", "Mary Ann"]})
    assert all(re.fullmatch(witch, move) for move in ("PASS", "SAVE Ada", "POISON Mary Ann"))
    assert not re.fullmatch(witch, "POISON Ada")


def test_constrained_moves_leave_no_fallback_with_a_random_model() -> None:
    from langgraph_omar import ChatPolicy, SharedPolicy
    from langgraph_omar.envs.registry import load_environment
    from langgraph_omar.envs.werewolf.actions import CHAT_KINDS
    from langgraph_omar.testing import tiny_model, tiny_tokenizer

    SharedPolicy.register(SharedPolicy("tiny-ww", tiny_model(context=4096), tiny_tokenizer(), max_wait_ms=5))
    model = ChatPolicy(model="tiny-ww", temperature=1.0, max_tokens=16)
    env = load_environment("werewolf", {"constrained_moves": True, "max_rounds": 2})
    final = env.build_graph(model).invoke(env.sample_input(3))
    moves = [a for a in final["actions"] if a["kind"] not in CHAT_KINDS]
    assert {a["kind"] for a in moves} >= {"kill", "inspect", "witch"} and final["fallbacks"] == []
    free = load_environment("werewolf", {"max_rounds": 2}).build_graph(model).invoke(env.sample_input(3))
    assert free["fallbacks"]  # the same random model without the grammar breaks the format
