"""Werewolf trajectories: each player is an agent of its game role (whatever `shuffle_roles` deals), with its own
terminal reward; behaviour-level rewards land on the turns that chose the moves; per-team win rates reach the training
metrics; an evaluation seats the tested adapter on every player of one team."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from adapter_helpers import save_random_adapter
from werewolf_scripts import ROSTER, TINY_WEREWOLF, VILLAGE_WINS, Script, scripted_model, werewolf_engine  # noqa: F401

from langgraph_omar.envs.registry import load_environment
from langgraph_omar.envs.werewolf.config import team_of
from langgraph_omar.envs.werewolf.rules import new_game
from langgraph_omar.eval.arena import evaluate
from langgraph_omar.rl.batch import collect_samples
from langgraph_omar.rl.selfplay import rollout_metrics
from langgraph_omar.rollout import run_episodes
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.testing import tiny_model
from langgraph_omar.trajectory import Episode

ROLES = dict(ROSTER)


def roster_file(folder: Path, **rules: Any) -> Path:
    path = folder / "six.yaml"
    path.write_text(yaml.safe_dump({"agents": [{"name": n, "role": r} for n, r in ROSTER], "rules": rules}))
    return path


def played(path: Path, script: Script, seeds: list[int], **options: Any) -> list[Episode]:
    env = load_environment("werewolf", {"werewolf_config": str(path), **options})
    graph = env.build_graph(scripted_model(script))
    episodes, _ = run_episodes(
        graph, [env.sample_input(s) for s in seeds], [{"seed": s} for s in seeds], progress=False
    )
    assert all(e.status == "ok" for e in episodes), [e.error for e in episodes]
    return episodes


def test_turns_carry_the_dealt_game_role_and_the_player(tmp_path: Path) -> None:
    path = roster_file(tmp_path, shuffle_roles=True, max_rounds=1)
    env = load_environment("werewolf", {"werewolf_config": str(path)})
    deals = []
    for seed, episode in zip([0, 1, 2], played(path, {}, [0, 1, 2]), strict=True):
        dealt = new_game(env.game, seed)["roles"]
        deals.append(dealt)
        assert episode.turns and all(t.role == dealt[t.metadata["player"]] for t in episode.turns)
        assert set(episode.rewards) == {"Villager", "Werewolf", "Seer", "Witch"}  # per game role, every deal
    assert len({tuple(sorted(d.items())) for d in deals}) > 1  # the seeds dealt the roles differently


def test_each_player_is_an_agent_of_its_game_role_and_trains_on_its_own_outcome(tmp_path: Path) -> None:
    (episode,) = played(roster_file(tmp_path), VILLAGE_WINS, [0])
    assert all(t.agent == t.metadata["player"] and t.role == ROLES[t.agent] for t in episode.turns)
    # Each player's reward (tests/test_env_werewolf.py): Aurora, killed in round 1 of the village's 2-round
    # win, 0.9; her team's survivors 1; the werewolves -1. Per game role, the mean of its players'.
    assert episode.agent_rewards == pytest.approx(
        {"Aurora": 0.9, "Bram": -1.0, "Celeste": 1.0, "Dorian": -1.0, "Elise": 1.0, "Finn": 1.0}
    )
    assert episode.rewards == pytest.approx({"Villager": 0.95, "Werewolf": -1.0, "Seer": 1.0, "Witch": 1.0})
    # One turn chain per player who acted (Aurora died before her first move), each ending on its own reward:
    # Finn's is his own 1, not the villagers' 0.95.
    samples, _ = collect_samples([episode])
    assert {(s.role, s.agent) for s in samples} == {
        (ROLES[p], p) for p in ("Bram", "Celeste", "Dorian", "Elise", "Finn")
    }
    assert {episode.reward_of(t) for t in episode.turns if t.agent == "Finn"} == {1.0}


def test_behaviour_rewards_land_on_the_turns_that_chose_the_moves(tmp_path: Path) -> None:
    (episode,) = played(roster_file(tmp_path), VILLAGE_WINS, [0], behaviour_rewards=0.5)
    by_player: dict[str, list[float]] = {}
    for turn in episode.turns:
        by_player.setdefault(turn.metadata["player"], []).append(turn.reward)
    # The hand-computed scores of this game (tests/test_env_werewolf.py), times b = 0.5.
    totals = {player: sum(rewards) for player, rewards in by_player.items()}
    assert totals == {"Bram": 1.0, "Celeste": 2.0, "Dorian": 1.5, "Elise": 1.5, "Finn": 0.0}
    assert sorted(r for r in by_player["Finn"] if r) == [-0.5, 0.5]  # a vote across, then one for a teammate
    (plain,) = played(roster_file(tmp_path), VILLAGE_WINS, [0])
    assert all(turn.reward == 0.0 for turn in plain.turns)  # off unless asked for


def test_per_team_win_rates_reach_the_training_metrics(tmp_path: Path) -> None:
    episodes = played(roster_file(tmp_path), VILLAGE_WINS, [0])
    metrics = rollout_metrics(episodes)
    assert (metrics["env_win_rate_Villagers"], metrics["env_win_rate_Werewolves"]) == (1.0, 0.0)


@pytest.mark.usefixtures("werewolf_engine")
def test_evaluation_seats_the_tested_adapter_on_every_player_of_one_team(tmp_path: Path) -> None:
    adapter = save_random_adapter(tiny_model(0), tmp_path / "trained")
    path = roster_file(tmp_path, shuffle_roles=True, max_rounds=1)
    options = {"werewolf_config": str(path)}
    result = evaluate(
        "werewolf", str(adapter), episodes=1, seed=3, model=TINY_WEREWOLF, max_tokens=3, env_options=options
    )
    tested_name = SharedPolicy.get(TINY_WEREWOLF).ensure_adapter(str(adapter))
    dealt = new_game(load_environment("werewolf", options).game, 3)["roles"]
    assert [g.tested_seat for g in result.games] == ["Villagers", "Werewolves"]
    for game, episode in zip(result.games, result.episodes, strict=True):
        assert game.status == "ok", game.error
        tested_players = {p for p, role in dealt.items() if team_of(role) == game.tested_seat}
        for turn in episode.turns:
            assert turn.role == dealt[turn.metadata["player"]]
            assert turn.adapter == (tested_name if turn.metadata["player"] in tested_players else None)
        assert {t.metadata["player"] for t in episode.turns if t.adapter} <= tested_players
        assert any(t.adapter for t in episode.turns) and any(t.adapter is None for t in episode.turns)
