"""Real multi-agent LangGraph apps (tests/apps: a langgraph-swarm of `create_agent` agents, a langgraph-supervisor
team of `create_react_agent` workers, a plain graph of `create_react_agent` nodes, LangGraph's red-teaming
simulation benchmark with its LLM evaluator, LangGraph's multi-agent network tutorial) run through `omar rollout`,
`omar train` and `omar eval` with no role metadata added: every turn's role is its agent's name (an LLM
evaluator's, `judge`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langgraph_omar.cli import main
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.testing import tiny_model, tiny_tokenizer
from langgraph_omar.trajectory import read_episodes

APPS = Path(__file__).parent / "apps"
TINY = ["--model", "tiny", "--max-tokens", "4"]
TRAIN = ["--model", "tiny", "--iterations", "1", "--episodes-per-iteration", "4", "--group-size", "2"]
TRAIN += ["--selfplay.max-tokens", "4", "--micro-batch-size", "4", "--no-degenerate.over-length"]


@pytest.fixture
def roomy_policy() -> SharedPolicy:
    """The tiny engine as model "tiny", with room for a tutorial's prompts (system prompts, tool schemas, ten
    turns of conversation): the default tiny model has 512 positions."""
    policy = SharedPolicy(
        "tiny", tiny_model(0, context=2048), tiny_tokenizer(), max_wait_ms=5, prefill_dtype="float32"
    )
    SharedPolicy.register(policy)
    return policy


CHAT = ["assistant", "user"] * 5 + ["judge"]  # the simulation's ten turns, then the evaluator's verdict
NETWORK = ["researcher", "chart_generator"] * 3 + ["researcher"]  # the handoffs until the turn cap


@pytest.mark.parametrize(
    ("app", "acting", "trained", "train_flags"),
    [
        (
            "swarm_support",
            [["flight_assistant"], ["hotel_assistant"]],
            ["flight_assistant", "hotel_assistant"],
            [],
        ),
        (
            "supervisor_team",
            [["supervisor", "math_expert", "supervisor"], ["supervisor", "research_expert", "supervisor"]],
            ["math_expert", "research_expert"],
            [],
        ),
        ("react_market", [["buyer", "seller"], ["buyer", "seller"]], ["buyer", "seller"], []),
        # the tiny judge gives every game one verdict: the EMA baseline (groups of one) still has a signal
        ("airline_redteam", [CHAT, CHAT], ["assistant", "user"], ["--group-size", "1"]),
        ("network_chart", [NETWORK, NETWORK], ["chart_generator", "researcher"], []),
    ],
)
def test_a_real_app_runs_through_rollout_train_and_eval_with_its_agents_as_roles(
    roomy_policy, tmp_path, monkeypatch, capsys, app, acting, trained, train_flags
):
    monkeypatch.syspath_prepend(str(APPS))
    monkeypatch.chdir(tmp_path)
    target = f"{app}:build"
    assert main(["rollout", target, "--episodes", "2", "--out", "app.jsonl", *TINY]) == 0
    printed = capsys.readouterr()
    assert f"mean reward over 2 finished episodes: {trained[0]} " in printed.out
    with_tools = app in ("swarm_support", "network_chart")  # their agents have tools
    assert ("0 tool calls in 2 episodes" in printed.err) == with_tools
    by_seed = {e.metadata["seed"]: e for e in read_episodes(tmp_path / "app.jsonl")}
    assert [[t.role for t in by_seed[seed].turns] for seed in (0, 1)] == acting
    assert all(t.source == "policy" for e in by_seed.values() for t in e.turns if t.role in trained)
    assert all(set(e.rewards) == set(trained) for e in by_seed.values())

    assert main(["train", target, "--out", "run", "--no-progress", *TRAIN, *train_flags]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["trained_turns"] > 0 and {f"reward_{role}" for role in trained} <= set(metrics)

    argv = ["eval", target, "--adapter", "run/adapter", "--episodes", "2", "--out", "eval", *TINY]
    assert main(argv) == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert result["seats"] == sorted(trained)
    assert all(g["status"] == "ok" for g in result["games"])
