"""A graph of one's own may have a judge, as an Environment may: a factory that takes `judge=` gets the
commands' judge (the served base model, adapter disabled, with a judge's token budget), so a reward computed
by an LLM never runs on the policy it scores (LangGraph's simulation-benchmark tutorial, tests/apps)."""

from __future__ import annotations

import json
import sys
import textwrap
import uuid
import warnings
from pathlib import Path

import pytest
from langchain_core.runnables import RunnableLambda

from langgraph_omar.cli import main
from langgraph_omar.envs.registry import ContractWarning, load_environment
from langgraph_omar.run_folder import RunFolder
from langgraph_omar.trajectory import read_episodes

MODULE = """
from typing import TypedDict
from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    said: str
    rewards: dict


def sample_input(seed):
    return {"said": ""}


def build(model, judge=None):
    def talk(state):
        return {"said": model.invoke("Hello there").text}

    def score(state):
        verdict = (judge or model).invoke("Was it polite? " + state["said"]).text
        return {"rewards": {"talk": float(len(verdict) % 2)}}

    graph = StateGraph(State)
    graph.add_node("talk", talk)
    graph.add_node("score", score)
    graph.add_edge(START, "talk")
    graph.add_edge("talk", "score")
    graph.add_edge("score", END)
    return graph.compile()
"""


@pytest.fixture
def judged_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    name = f"judged_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE))
    return f"{name}:build"


def test_a_factory_that_takes_judge_gets_the_commands_judge(judged_graph):
    given = []
    graph = RunnableLambda(lambda state: state)
    env = load_environment(judged_graph)
    env.graph_or_factory = lambda model, judge=None: given.append((model, judge)) or graph
    env.build_graph("players", judge="judge")
    env.graph_or_factory = lambda model: given.append((model,)) or graph
    env.build_graph("players", judge="judge")
    assert given == [("players", "judge"), ("players",)]


def test_self_play_judges_on_the_base_model_with_a_judges_budget_not_on_the_trained_policy(
    policy, judged_graph
):
    argv = ["train", judged_graph, "--out", "run", "--no-progress", "--model", "tiny", "--iterations", "1"]
    argv += ["--episodes-per-iteration", "2", "--group-size", "2", "--selfplay.max-tokens", "3"]
    assert main([*argv, "--micro-batch-size", "2"]) in (0, 2)  # 2: its 3-token turns may train nothing
    episodes = read_episodes(RunFolder("run").trajectories_file)
    talk = [t for e in episodes for t in e.turns if t.node == "talk"]
    verdicts = [t for e in episodes for t in e.turns if t.node == "score"]
    assert talk and all(t.adapter is not None for t in talk)
    assert verdicts and all(
        t.adapter is None and t.temperature == 0.0 and t.role == "judge" for t in verdicts
    )
    # the players' 3-token cap is theirs: a judge's answer (a verdict, a JSON object) needs room
    assert all(len(t.completion_ids) > 3 for t in verdicts)


def test_rollout_gives_the_factory_its_judge_whose_calls_are_the_judge_role(policy, judged_graph):
    assert main(["rollout", judged_graph, "--episodes", "1", "--out", "r.jsonl", "--model", "tiny"]) == 0
    (episode,) = read_episodes("r.jsonl")
    (verdict,) = [t for t in episode.turns if t.node == "score"]
    assert verdict.temperature == 0.0  # the judge's, not the players' (0.7 in a rollout)
    assert (verdict.role, [t.role for t in episode.turns if t.node == "talk"]) == ("judge", ["talk"])


def test_eval_learns_the_seats_from_the_rewards_without_taking_the_judge_for_an_unrewarded_player(
    policy, judged_graph
):
    argv = ["train", judged_graph, "--out", "run", "--no-progress", "--model", "tiny", "--iterations", "1"]
    main([*argv, "--episodes-per-iteration", "2", "--group-size", "2", "--selfplay.max-tokens", "3"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ContractWarning)  # was: roles ['score'] acted but got no reward
        argv = ["eval", judged_graph, "--adapter", "run/adapter", "--episodes", "2", "--out", "eval"]
        assert main([*argv, "--model", "tiny", "--max-tokens", "3"]) == 0
    result = json.loads(Path("eval/eval.json").read_text())
    assert result["seats"] == ["talk"]
