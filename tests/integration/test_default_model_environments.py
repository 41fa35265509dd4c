"""Full episodes of each environment on the real default model, through `omar rollout`, with default rules.

Each test plays one whole episode (SOTOPIA up to its ending rule and the judge; Werewolf until a team wins or
the round cap) and checks the exported trajectories: status, every model call recorded with its tokens and
logprobs, rewards (or recorded judge failures) for every role, and the environment's fallbacks.
"""

from __future__ import annotations

import math

import pytest

from langgraph_omar.cli import main
from langgraph_omar.envs.sotopia import DEFAULT_JUDGE_MAX_TOKENS
from langgraph_omar.envs.sotopia.judge import SOTOPIA_DIMENSIONS
from langgraph_omar.envs.sotopia.rules import SotopiaRules
from langgraph_omar.envs.werewolf.config import load_werewolf_config, team_of
from langgraph_omar.trajectory import Episode, read_episodes

pytestmark = pytest.mark.integration

# 16 new tokens per model call instead of the CLI's 64: a speech of a dozen words, and room for any Werewolf
# command (KILL NAME is 3-4 tokens). The model runs at batch 1 for most turns here, so the budget sets the
# time. Measured on 2 CPU cores, a full SOTOPIA episode (20 turns + the judge) / Werewolf game took 45 s /
# 35 s at 16 tokens and 74 s / 88 s at 64 when idle, but 3.7 / 6 min at 64 with another job on the cores. The
# SOTOPIA judge is the graph's default: one JSON answer per agent, constrained to the 7-score schema, with its
# own token cap (`DEFAULT_JUDGE_MAX_TOKENS`), so it must parse at the first attempt. The rules are the defaults.
MAX_TOKENS = "16"
SOTOPIA_ROLES = ("agent_1", "agent_2")


def rollout_one(env: str, out) -> Episode:
    assert main(["rollout", env, "--episodes", "1", "--max-tokens", MAX_TOKENS, "--out", str(out)]) == 0
    (episode,) = read_episodes(out)
    assert episode.status == "ok" and episode.error is None
    return episode


def assert_every_call_is_token_faithful(episode: Episode) -> None:
    for turn in episode.turns:
        cap = DEFAULT_JUDGE_MAX_TOKENS if turn.role == "judge" else int(MAX_TOKENS)
        assert turn.prompt_ids and 0 < len(turn.completion_ids) <= cap
        assert len(turn.logprobs) == len(turn.completion_ids)
        assert all(math.isfinite(lp) and lp <= 0.0 for lp in turn.logprobs)


def assert_fallbacks_match_turns(episode: Episode) -> None:
    """Every recorded fallback replaced the text of the traced call it names, whose turn carries it; the counts
    agree."""
    fallbacks = episode.metadata.get("fallbacks", [])
    assert episode.metadata["metrics"]["fallbacks"] == len(fallbacks)
    by_call = {turn.run_id: turn for turn in episode.turns}
    for record in fallbacks:
        turn = by_call[record["call_id"]]
        assert (turn.role, turn.text, turn.fallback) == (record["role"], record["raw"], record["fallback"])
    assert sum(turn.fallback is not None for turn in episode.turns) == len(fallbacks)


def test_negotiation_episode_through_omar_rollout(tmp_path):
    out = tmp_path / "negotiation.jsonl"
    assert main(["rollout", "negotiation", "--episodes", "1", "--max-tokens", "16", "--out", str(out)]) == 0
    episodes = read_episodes(out)
    assert [e.status for e in episodes] == ["ok"]
    for episode in episodes:
        assert set(episode.rewards) == {"buyer", "seller"}
        assert {t.role for t in episode.turns} == {"buyer", "seller"}
        assert all(len(t.logprobs) == len(t.completion_ids) > 0 for t in episode.turns)


def test_full_sotopia_episode_with_its_judge_through_omar_rollout(tmp_path):
    episode = rollout_one("sotopia", tmp_path / "sotopia.jsonl")
    metrics = episode.metadata["metrics"]
    assert_every_call_is_token_faithful(episode)

    # The conversation: the agents alternate from agent_1 until a default rule ends it.
    rules = SotopiaRules()
    player_turns = [t for t in episode.turns if t.role in SOTOPIA_ROLES]
    assert [t.role for t in player_turns] == [SOTOPIA_ROLES[i % 2] for i in range(len(player_turns))]
    assert len(player_turns) == metrics["turns"] <= rules.max_turns
    stop = metrics["stop_reason"]
    assert stop in ("max_turns", "silence") or stop.startswith("left:"), stop
    if stop == "max_turns":
        assert len(player_turns) == rules.max_turns

    # The judge: every call traced as the "judge" role, after the conversation; one schema-constrained JSON call
    # per agent that parses the first time: all seven dimensions within range (reward = goal / 10).
    judge_turns = [t for t in episode.turns if t.role == "judge"]
    assert {t.role for t in episode.turns} <= {*SOTOPIA_ROLES, "judge"}
    assert episode.turns[-len(judge_turns) :] == judge_turns
    assert not metrics["judge_failures"], metrics["judge_errors"]
    assert metrics["judge_attempts"] == {role: 1 for role in SOTOPIA_ROLES} and len(judge_turns) == 2
    for role in SOTOPIA_ROLES:
        scores = episode.reward_dimensions[role]
        assert set(scores) == {d.name for d in SOTOPIA_DIMENSIONS}
        assert all(d.low <= scores[d.name] <= d.high for d in SOTOPIA_DIMENSIONS)
        assert (
            episode.rewards[role] == pytest.approx(scores["goal"] / 10)
            and 0.0 <= episode.rewards[role] <= 1.0
        )

    assert_fallbacks_match_turns(episode)


def test_full_werewolf_game_through_omar_rollout(tmp_path):
    episode = rollout_one("werewolf", tmp_path / "werewolf.jsonl")
    metrics = episode.metadata["metrics"]
    game = load_werewolf_config()  # what `omar rollout werewolf` plays: the bundled classic_6 and its rules
    assert_every_call_is_token_faithful(episode)

    # Every decision is one traced model call of a player, under the player's game role, the player named.
    assert all(t.role == game.roles[t.metadata["player"]] for t in episode.turns)
    assert metrics["decisions"] == len(episode.turns) > 0

    # The game ended: a team won, or the round cap made it a draw.
    assert 1 <= metrics["rounds"] <= game.rules.max_rounds
    winner = metrics["winner"]
    assert winner in ("Villagers", "Werewolves") or (
        winner == "draw" and metrics["rounds"] == game.rules.max_rounds
    )
    assert metrics["win_rate"] == {
        "Villagers": float(winner == "Villagers"),
        "Werewolves": float(winner == "Werewolves"),
    }

    # A reward for every game role, the mean of its players': the loss reward (-1) for the losing team; for the
    # winners 0.9**n, n the rounds a player missed after elimination (1.0 for survivors); 0 for all in a draw.
    assert set(episode.rewards) == set(game.roles.values())
    for role, reward in episode.rewards.items():
        if winner == "draw":
            assert reward == 0.0
        elif team_of(role) != winner:
            assert reward == -1.0
        else:
            assert 0.9 ** metrics["rounds"] <= reward <= 1.0, reward

    assert sum(metrics["fallbacks_by_role"].values()) == metrics["fallbacks"]
    assert_fallbacks_match_turns(episode)
