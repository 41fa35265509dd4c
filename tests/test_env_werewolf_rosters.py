"""Werewolf rosters without code changes: held-out variants run from their files (scripted full games through
the graph), and `--werewolf-config FILE` on `omar rollout`, `omar train` and `omar eval`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from werewolf_scripts import TINY_WEREWOLF, Script, scripted_model, werewolf_engine  # noqa: F401

from langgraph_omar.cli import main
from langgraph_omar.envs.registry import load_environment
from langgraph_omar.envs.werewolf.config import load_werewolf_config
from langgraph_omar.envs.werewolf.graph import build_graph
from langgraph_omar.trajectory import read_episodes

DATA = Path(__file__).parent / "data" / "werewolf"
WITCH_GUARD_7 = DATA / "witch_guard_7.yaml"  # plurality exile, a tie exiles nobody
DOCTOR_MAJORITY_8 = DATA / "doctor_majority_8.json"  # Werewolf Arena's majority exile


def play(path: Path, script: Script) -> dict[str, Any]:
    """A whole scripted game of the variant in `path`, through the environment's graph."""
    env = load_environment("werewolf", {"werewolf_config": str(path)})
    return env.build_graph(scripted_model(script)).invoke(env.sample_input(0))


def texts(final: dict[str, Any]) -> str:
    return " ".join(event["text"] for event in final["events"])


# Ada Villager, Basil Werewolf, Cora Witch, Dmitri Guard, Esme Werewolf, Felix Villager, Greta Villager.
TIE_THEN_VILLAGE_WINS: Script = {
    **{(1, "kill", w): "KILL Ada" for w in ("Basil", "Esme")},
    (1, "protect", "Dmitri"): "PROTECT Ada",  # the guard stops night 1's attack
    **{(1, "vote", p): "VOTE Basil" for p in ("Ada", "Cora", "Dmitri")},
    **{(1, "vote", p): "VOTE Cora" for p in ("Basil", "Esme", "Felix")},  # 3 - 3, Greta abstains
    **{(2, "kill", w): "KILL Felix" for w in ("Basil", "Esme")},
    (2, "protect", "Dmitri"): "PROTECT Greta",
    (2, "witch", "Cora"): "POISON Basil",
    **{(2, "vote", p): "VOTE Esme" for p in ("Ada", "Cora", "Dmitri", "Greta")},
    (2, "vote", "Esme"): "VOTE Ada",
}


def test_seven_players_with_witch_and_guard_and_a_tie_that_exiles_nobody() -> None:
    final = play(WITCH_GUARD_7, TIE_THEN_VILLAGE_WINS)
    assert final["players"] == ["Ada", "Basil", "Cora", "Dmitri", "Esme", "Felix", "Greta"]
    assert "Day 1 dawns. Nobody died during the night." in texts(final)  # guarded
    assert "Tie between Basil, Cora: nobody is exiled." in texts(final)
    # Night 2: Felix killed, Basil poisoned; day 2: Esme, the last werewolf, exiled 4 - 1.
    assert final["eliminated"] == {
        "Felix": {"round": 2, "cause": "werewolves"},
        "Basil": {"round": 2, "cause": "poison"},
        "Esme": {"round": 2, "cause": "vote"},
    }
    assert final["winner"] == "Villagers" and final["round"] == 2 and final["fallbacks"] == []
    # Felix died in the last round: he missed no round, so every villager has the full win reward.
    assert final["rewards"] == {"Villager": 1.0, "Werewolf": -1.0, "Witch": 1.0, "Guard": 1.0}


# Ada Villager, Basil Werewolf, Cora Seer, Dmitri Doctor, Esme Werewolf, Felix, Greta and Hugo Villagers.
MAJORITY_GAME: Script = {
    **{(1, "kill", w): "KILL Hugo" for w in ("Basil", "Esme")},
    (1, "protect", "Dmitri"): "PROTECT Hugo",
    (1, "inspect", "Cora"): "INSPECT Basil",
    **{(1, "vote", p): "VOTE Basil" for p in ("Ada", "Cora", "Dmitri", "Felix")},  # 4 of 8: no majority
    **{(1, "vote", p): "VOTE Cora" for p in ("Basil", "Esme")},
    **{(2, "kill", w): "KILL Greta" for w in ("Basil", "Esme")},
    (2, "protect", "Dmitri"): "PROTECT Ada",
    (2, "inspect", "Cora"): "INSPECT Esme",
    **{(2, "vote", p): "VOTE Basil" for p in ("Ada", "Cora", "Dmitri", "Felix", "Hugo")},  # 5 of 7
    **{(2, "vote", p): "VOTE Cora" for p in ("Basil", "Esme")},
    (3, "kill", "Esme"): "KILL Felix",
    (3, "protect", "Dmitri"): "PROTECT Cora",
    (3, "inspect", "Cora"): "INSPECT Ada",
    **{(3, "vote", p): "VOTE Esme" for p in ("Ada", "Cora", "Dmitri")},  # 3 of 5: a majority
    (3, "vote", "Esme"): "VOTE Ada",
}


def test_eight_players_with_a_doctor_under_majority_exile() -> None:
    final = play(DOCTOR_MAJORITY_8, MAJORITY_GAME)
    assert "Nobody has a majority (5 of 8 votes): nobody is exiled." in texts(final)
    assert final["eliminated"] == {
        "Greta": {"round": 2, "cause": "werewolves"},
        "Basil": {"round": 2, "cause": "vote"},
        "Felix": {"round": 3, "cause": "werewolves"},
        "Esme": {"round": 3, "cause": "vote"},
    }
    assert final["winner"] == "Villagers" and final["round"] == 3 and final["fallbacks"] == []
    # Villagers: Ada, Felix (killed in the last round) and Hugo 1.0; Greta missed one round: 0.9.
    assert final["rewards"] == {
        "Villager": (1.0 + 0.9 + 1.0 + 1.0) / 4,
        "Werewolf": -1.0,
        "Seer": 1.0,
        "Doctor": 1.0,
    }
    # The same game under plurality exile: Basil's 4 votes of 8 exile him on day 1.
    plurality = load_werewolf_config(DOCTOR_MAJORITY_8, rules={"exile": "plurality"})
    first_day = build_graph(scripted_model(MAJORITY_GAME), plurality).invoke({"seed": 0})
    assert first_day["eliminated"]["Basil"] == {"round": 1, "cause": "vote"}


# ---- the command line ------------------------------------------------------------------------------------


def four_players(folder: Path) -> Path:
    """One werewolf against three villagers: every game ends by round 2 (a night's kill or a day's exile)."""
    path = folder / "four.yaml"
    agents = [
        {"name": n, "role": r}
        for n, r in [("Ann", "Villager"), ("Bo", "Werewolf"), ("Cy", "Villager"), ("Di", "Villager")]
    ]
    path.write_text(yaml.safe_dump({"agents": agents}))
    return path


TINY = ["--model", TINY_WEREWOLF, "--max-tokens", "4"]
TRAIN = ["--model", TINY_WEREWOLF, "--iterations", "1", "--episodes-per-iteration", "2", "--group-size", "1"]
TRAIN += ["--selfplay.max-tokens", "4", "--micro-batch-size", "4", "--no-progress"]
TRAIN += ["--no-degenerate.over-length", "--no-degenerate.off-format"]  # the tiny model's moves all fall back


@pytest.mark.usefixtures("werewolf_engine")
def test_werewolf_config_file_on_rollout_train_and_eval(tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "seven.jsonl"
    argv = ["rollout", "werewolf", "--werewolf-config", str(WITCH_GUARD_7), "--max-rounds", "1"]
    assert main([*argv, "--episodes", "2", *TINY, "--out", str(out)]) == 0
    episodes = read_episodes(out)
    assert [e.status for e in episodes] == ["ok", "ok"]
    for episode in episodes:  # the file's roster: its players, in its game roles
        assert {t.metadata["player"] for t in episode.turns} <= {
            "Ada",
            "Basil",
            "Cora",
            "Dmitri",
            "Esme",
            "Felix",
            "Greta",
        }
        assert {t.role for t in episode.turns} <= {"Villager", "Werewolf", "Witch", "Guard"}
        assert set(episode.rewards) == {"Villager", "Werewolf", "Witch", "Guard"}

    roster = four_players(tmp_path)
    run = tmp_path / "run"
    assert main(["train", "werewolf", "--werewolf-config", str(roster), "--out", str(run), *TRAIN]) == 0
    assert "trained 1 iteration(s)" in capsys.readouterr().out
    assert yaml.safe_load((run / "config.yaml").read_text())["env"]["options"]["werewolf_config"] == str(
        roster
    )
    (metrics,) = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    wins = metrics["env_win_rate_Villagers"] + metrics["env_win_rate_Werewolves"]
    assert wins == 1.0  # every game of this roster is decided: per-team win rates among training metrics
    trained = read_episodes(run / "trajectories.jsonl")
    assert {t.role for e in trained for t in e.turns} <= {"Villager", "Werewolf"}

    argv = ["eval", "werewolf", "--werewolf-config", str(roster), "--adapter", str(run / "adapter")]
    assert main([*argv, "--episodes", "1", *TINY, "--out", str(tmp_path / "eval")]) == 0
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert result["seats"] == ["Villagers", "Werewolves"] and result["config"]["env_options"][
        "werewolf_config"
    ] == str(roster)
    assert [(g["tested_seat"], g["sides"]) for g in result["games"]] == [
        ("Villagers", {"Villager": "tested", "Werewolf": "opponent"}),
        ("Werewolves", {"Villager": "opponent", "Werewolf": "tested"}),
    ]
