"""A graph of one's own, written here with plain LangGraph against the minimal contract (not in the package),
goes through `omar rollout`, `omar train` and `omar eval` from its own folder, with no PYTHONPATH."""

from __future__ import annotations

import json
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from langgraph_omar.cli import main
from langgraph_omar.trajectory import read_episodes

TRIO = """
from typing import Annotated, TypedDict
import operator

from langgraph.graph import END, START, StateGraph

ROLE_OF = {"ask": "asker", "answer": "answerer", "check": "checker", "ask_again": "asker"}


class State(TypedDict, total=False):
    topic: str
    said: Annotated[list, operator.add]
    rewards: dict


def sample_input(seed):
    return {"topic": ["boats", "bread", "birds"][seed % 3], "said": []}


def build(model):
    def speak(node):
        async def run(state):
            said = " ".join(t for _, t in state.get("said", []))
            reply = await model.ainvoke(f"{node} about {state.get('topic', 'tea')}: {said}")
            return {"said": [(ROLE_OF[node], reply.text)]}
        return run

    def reward(state):
        {BROKEN}
        texts = {}
        for role, text in state.get("said", []):
            texts[role] = texts.get(role, "") + text
        return {"rewards": {role: sum(c.isupper() for c in t) / max(len(t), 1) for role, t in texts.items()}}

    graph = StateGraph(State)
    previous = START
    for node, role in ROLE_OF.items():
        graph.add_node(node, speak(node), metadata={"role": role})
        graph.add_edge(previous, node)
        previous = node
    graph.add_node("reward", reward)
    graph.add_edge(previous, "reward")
    graph.add_edge("reward", END)
    return graph.compile()
"""

TINY = ["--model", "tiny", "--max-tokens", "4"]
TRAIN = ["--model", "tiny", "--iterations", "1", "--episodes-per-iteration", "4", "--group-size", "2"]
TRAIN += [
    "--selfplay.max-tokens",
    "4",
    "--micro-batch-size",
    "4",
    "--no-degenerate.over-length",
    "--no-progress",
]


def write_graph(folder: Path, broken: str = "pass") -> str:
    """The graph module in `folder`, under a fresh name (a module imported once stays imported)."""
    name = f"trio_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(textwrap.dedent(TRIO).replace("{BROKEN}", broken))
    return f"{name}:build"


@pytest.fixture
def own_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    return tmp_path


def test_rollout_train_and_eval_run_from_the_graphs_own_folder(policy, own_folder, capsys):
    target = write_graph(own_folder)
    assert main(["rollout", target, "--episodes", "3", "--out", "trio.jsonl", *TINY]) == 0
    episodes = read_episodes(own_folder / "trio.jsonl")
    assert [e.status for e in episodes] == ["ok"] * 3
    assert {t.role for t in episodes[0].turns} == {"asker", "answerer", "checker"}
    assert [t.node for t in episodes[0].turns if t.role == "asker"] == ["ask", "ask_again"]
    assert set(episodes[0].rewards) == {"asker", "answerer", "checker"}

    assert main(["train", target, "--out", "run", *TRAIN]) == 0
    assert "trained 1 iteration(s)" in capsys.readouterr().out
    metrics = [json.loads(line) for line in (own_folder / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["trained_turns"] > 0 and set(metrics[0]) >= {"reward_asker", "reward_checker"}

    argv = ["eval", target, "--adapter", "run/adapter", "--episodes", "2", *TINY, "--out", "eval"]
    assert main([*argv, "--run", "run"]) == 0
    printed = capsys.readouterr().out
    assert "tested - opponent" in printed
    result = json.loads((own_folder / "eval" / "eval.json").read_text())
    assert result["seats"] == ["answerer", "asker", "checker"]  # learnt from a first episode's rewards
    assert len(result["games"]) == 6 and all(g["status"] == "ok" for g in result["games"])
    tested = [g for g in result["games"] if g["tested_seat"] == "asker"]
    assert all(g["sides"]["asker"] == "tested" and g["sides"]["checker"] == "opponent" for g in tested)


def test_train_exits_non_zero_when_every_episode_fails(policy, own_folder, capsys):
    target = write_graph(own_folder, broken='raise KeyError("score")')
    assert main(["train", target, "--out", "run", *TRAIN]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("omar train: error: iteration 0: all 4 episodes") and "KeyError" in err
    assert "\n" not in err
    assert not (own_folder / "run" / "adapter").exists()


def test_a_role_that_never_gets_a_reward_is_said_once(policy, own_folder, capsys):
    target = write_graph(
        own_folder, broken='state = {**state, "said": [s for s in state["said"] if s[0] != "checker"]}'
    )
    with pytest.warns(UserWarning, match=r"\['checker'\] acted but never got a reward"):
        assert main(["train", target, "--out", "run", *TRAIN]) == 0


def test_unrewarded_graph_and_missing_sample_input_are_said_in_words(policy, own_folder, capsys):
    name = f"silent_{uuid.uuid4().hex[:8]}"
    source = textwrap.dedent(TRIO).replace("{BROKEN}", "return {}").replace("def sample_input", "def _unused")
    (own_folder / f"{name}.py").write_text(source)
    with pytest.warns(UserWarning, match="no sample_input"):
        code = main(["train", f"{name}:build", "--out", "run", *TRAIN])
    assert code == 2
    assert "no episode's final state has `rewards`" in capsys.readouterr().err


def test_import_errors_are_one_line(own_folder, capsys):
    (own_folder / "raises_at_import.py").write_text("raise RuntimeError('no config here')\n")
    assert main(["rollout", "raises_at_import:build", "--out", "x.jsonl"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "omar rollout: error: importing 'raises_at_import' raised RuntimeError: no config here"


def test_an_iteration_that_trains_no_turn_is_said_with_its_reason(policy, own_folder, capsys):
    target = write_graph(own_folder)
    flagged = [a for a in TRAIN if a != "--no-degenerate.over-length"]  # 4-token replies are all cut off
    with pytest.warns(UserWarning, match="iteration 0 trained no turn: every turn was degenerate"):
        assert main(["train", target, "--out", "run", *flagged]) == 2
    assert "no iteration trained a turn" in capsys.readouterr().err


def test_an_environment_of_ones_own_gets_its_options_as_flags(policy, own_folder):
    (own_folder / "counting_env.py").write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass
            from langgraph_omar import Environment, option
            from selfplay_free_graph import build

            @dataclass
            class Counting(Environment):
                name = "counting"
                seed: int = option(3, "an option named like a command flag")
                rounds: int = option(1, "rounds")

                def build_graph(self, model, *, judge=None):
                    return build(model)

                def sample_input(self, seed):
                    return {"topic": f"round {self.rounds}", "said": []}
            """
        )
    )
    (own_folder / "selfplay_free_graph.py").write_text(textwrap.dedent(TRIO).replace("{BROKEN}", "pass"))
    argv = ["rollout", "counting_env:Counting", "--rounds", "2", "--env.seed", "5", "--out", "c.jsonl", *TINY]
    assert main([*argv, "--episodes", "1"]) == 0
    (episode,) = read_episodes(own_folder / "c.jsonl")
    prompt = policy.tokenizer.decode(episode.turns[0].prompt_ids)
    assert "round 2" in prompt  # --rounds reached the environment


GUARDS = """
from typing import Annotated, TypedDict
import operator

from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    said: Annotated[list, operator.add]
    rewards: dict
    agent_rewards: dict


def sample_input(seed):
    return {"said": []}


def build(model):
    def speak(agent):
        async def run(state):
            reply = await model.ainvoke(f"{agent}, the vault: " + " ".join(t for _, t in state["said"]))
            return {"said": [(agent, reply.text)]}
        return run

    def score(state):
        share = {a: sum(c.isupper() for c in t) / max(len(t), 1) for a, t in state["said"]}
        # each guard is rewarded on its own; the thief by its role
        return {"agent_rewards": {"guard_1": share["guard_1"], "guard_2": 1 - share["guard_2"]},
                "rewards": {"thief": share["thief"]}}

    graph = StateGraph(State)
    graph.add_node("north", speak("guard_1"), metadata={"role": "guard", "agent": "guard_1"})
    graph.add_node("south", speak("guard_2"), metadata={"role": "guard", "agent": "guard_2"})
    graph.add_node("thief", speak("thief"))
    graph.add_node("score", score)
    for a, b in [(START, "north"), ("north", "thief"), ("thief", "south"), ("south", "score"), ("score", END)]:
        graph.add_edge(a, b)
    return graph.compile()
"""


def test_two_agents_of_one_role_train_as_two_trajectories(policy, own_folder, capsys):
    name = f"guards_{uuid.uuid4().hex[:8]}"
    (own_folder / f"{name}.py").write_text(textwrap.dedent(GUARDS))
    assert main(["train", f"{name}:build", "--out", "run", *TRAIN]) == 0
    episodes = read_episodes(own_folder / "run" / "trajectories.jsonl")
    assert len(episodes) == 4
    for episode in episodes:
        assert [(t.node, t.role, t.agent) for t in episode.turns] == [
            ("north", "guard", "guard_1"),
            ("thief", "thief", "thief"),
            ("south", "guard", "guard_2"),
        ]
        own = episode.agent_rewards
        assert set(own) == {"guard_1", "guard_2"}
        assert episode.rewards["guard"] == pytest.approx((own["guard_1"] + own["guard_2"]) / 2)
    metrics = [json.loads(line) for line in (own_folder / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["trajectories"] == 12  # 4 episodes x 3 agents: the two guards are not merged
    assert metrics[0]["trained_turns"] > 0 and "reward_guard" in metrics[0]


def test_an_error_raised_by_the_factory_is_shown_in_full(own_folder, capsys):
    name = f"raising_{uuid.uuid4().hex[:8]}"
    (own_folder / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from langchain_core.messages import SystemMessage

            def sample_input(seed):
                return {}

            def build(model):
                SystemMessage(content=None, tags=7)
            """
        )
    )
    assert main(["rollout", f"{name}:build", "--out", "x.jsonl", "--model", "tiny"]) == 2
    err = capsys.readouterr().err
    first, *rest = err.strip().splitlines()
    assert first == f"omar rollout: error: {name}:build: the factory raised ValidationError (below)"
    assert f"{name}.py" in err and "SystemMessage(content=None, tags=7)" in err  # where, in the user's file
    assert "2 validation errors for SystemMessage" in err and "tags" in err  # every line of the exception
    assert "langgraph_omar" not in err  # the user's own frames only
