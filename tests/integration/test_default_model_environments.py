"""Full episodes of each environment on the real default model, through the public entry points."""

from __future__ import annotations

import pytest

from langgraph_omar import ChatPolicy
from langgraph_omar.cli import main
from langgraph_omar.envs import sotopia
from langgraph_omar.envs.judge import SotopiaJudge
from langgraph_omar.envs.sotopia_rules import SotopiaRules
from langgraph_omar.rollout import run_episodes
from langgraph_omar.trajectory_io import read_episodes

pytestmark = pytest.mark.integration


def test_negotiation_episode_through_omar_rollout(tmp_path):
    out = tmp_path / "negotiation.jsonl"
    assert main(["rollout", "negotiation", "--episodes", "1", "--max-tokens", "16", "--out", str(out)]) == 0
    episodes = read_episodes(out)
    assert [e.status for e in episodes] == ["ok"]
    for episode in episodes:
        assert set(episode.rewards) == {"buyer", "seller"}
        assert {t.role for t in episode.turns} == {"buyer", "seller"}
        assert all(len(t.logprobs) == len(t.completion_ids) > 0 for t in episode.turns)


def test_sotopia_episode_with_judge_exports_rewards_or_records_failure():
    model = ChatPolicy(temperature=0.7, max_tokens=16)
    judge = SotopiaJudge(ChatPolicy(temperature=0.0, max_tokens=120), retries=0)
    graph = sotopia.build_graph(model=model, rules=SotopiaRules(max_turns=2), judge=judge)
    (episode,), summary = run_episodes(graph, [sotopia.sample_input(0)], progress=False)
    assert episode.status == "ok" and summary.failed == 0
    player_turns = [t for t in episode.turns if t.role in ("agent_1", "agent_2")]
    assert len(player_turns) == 2
    failures = episode.metadata["metrics"].get("judge_failures", [])
    # the judge either scored a role (reward = goal / 10 in [0, 1]) or recorded it as a failure: never invented
    for role in ("agent_1", "agent_2"):
        assert (role in episode.rewards and 0.0 <= episode.rewards[role] <= 1.0) or role in failures
