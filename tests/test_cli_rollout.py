from __future__ import annotations

from typing import TypedDict

import pytest
from langgraph.graph import END, START, StateGraph

from langgraph_omar import ChatPolicy
from langgraph_omar.cli import main
from langgraph_omar.trajectory import read_episodes


class FlakyState(TypedDict, total=False):
    fail: bool
    reply: str


def flaky_graph(model=None):
    """A user's graph factory: episodes whose input says fail raise after one model call."""
    model = model or ChatPolicy(model="tiny")

    def talk(state: FlakyState):
        reply = model.invoke("hello").content
        if state.get("fail"):
            raise RuntimeError("this episode breaks")
        return {"reply": reply, "rewards": {"talk": 1.0}}

    graph = StateGraph(FlakyState)
    graph.add_node("talk", talk)
    graph.add_edge(START, "talk")
    graph.add_edge("talk", END)
    return graph.compile()


def sample_input(seed: int) -> dict:
    return {"fail": seed == 1}


def test_rollout_builtin_environment(policy, tmp_path, capsys):
    out = tmp_path / "neg.jsonl"
    code = main(
        [
            "rollout",
            "negotiation",
            "--model",
            "tiny",
            "--episodes",
            "3",
            "--max-tokens",
            "6",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    episodes = read_episodes(out)
    assert len(episodes) == 3 and all(e.status == "ok" for e in episodes)
    assert all(set(e.rewards) == {"buyer", "seller"} for e in episodes)
    assert all(len(e.turns) > 0 for e in episodes)
    printed = capsys.readouterr().out
    assert "episodes 3, failed 0" in printed and "tokens/s" in printed


def test_one_failing_episode_does_not_stop_the_others(policy, tmp_path, capsys):
    out = tmp_path / "user.jsonl"
    code = main(
        ["rollout", "test_cli_rollout:flaky_graph", "--model", "tiny", "--episodes", "3", "--out", str(out)]
    )
    assert code == 0
    episodes = sorted(read_episodes(out), key=lambda e: e.metadata["seed"])  # written as they finish
    assert [e.status for e in episodes] == ["ok", "failed", "ok"]
    assert "this episode breaks" in episodes[1].error and len(episodes[1].turns) == 1
    printed = capsys.readouterr()
    assert "failed 1" in printed.out and "1 of 3 episodes failed" in printed.err


def test_every_episode_failing_exits_non_zero_with_the_first_error(policy, tmp_path, capsys):
    out = tmp_path / "user.jsonl"
    code = main(
        ["rollout", "test_cli_rollout:flaky_graph", "--model", "tiny", "--episodes", "2", "--out", str(out)]
        + ["--input", '{"fail": true}']
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "omar rollout: error: every episode failed; the first: RuntimeError: this episode breaks" in err
    assert [e.status for e in read_episodes(out)] == ["failed", "failed"]  # recorded all the same


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (["--temperature", "-1"], "temperature must be a finite number >= 0"),
        (["--temperature", "nan"], "temperature must be a finite number >= 0"),
        (["--temperature", "inf"], "temperature must be a finite number >= 0"),
        (["--top-p", "0"], "top_p must be in (0, 1]"),
        (["--max-tokens", "0"], "max_tokens must be >= 1"),
        (["--episodes", "0"], "--episodes and --max-concurrency must be >= 1"),
        (["--max-concurrency", "0"], "--episodes and --max-concurrency must be >= 1"),
        (["--out", "episodes.csv"], "expected a .jsonl, .ndjson or .parquet file"),
    ],
)
def test_bad_parameters_are_refused_before_any_episode(tmp_path, capsys, monkeypatch, flags, problem):
    monkeypatch.chdir(tmp_path)
    built = []
    monkeypatch.setattr("langgraph_omar.cli._load_environment", lambda *a: built.append(a))
    assert main(["rollout", "negotiation", "--out", "x.jsonl", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("omar rollout: error: ") and problem in err and "\n" not in err
    assert built == [] and list(tmp_path.iterdir()) == []  # no environment built, no file written


def test_a_corrupt_output_file_is_refused_before_any_episode(tmp_path, capsys, monkeypatch):
    out = tmp_path / "x.jsonl"
    out.write_text("not json\n{}\n")
    built = []
    monkeypatch.setattr("langgraph_omar.cli._load_environment", lambda *a: built.append(a))
    assert main(["rollout", "negotiation", "--out", str(out)]) == 2
    assert "line 1: not valid JSON" in capsys.readouterr().err and built == []


def test_bad_graph_name_is_one_line(capsys, tmp_path):
    assert main(["rollout", "no_such_env", "--out", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("omar rollout: error: unknown environment") and "\n" not in err


def test_envs_lists_the_registry_and_an_environments_options(capsys):
    assert main(["envs"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("negotiation", "sotopia", "werewolf"))
    assert main(["envs", "negotiation"]) == 0
    shown = capsys.readouterr().out
    assert "--kind" in shown and "--max-turns" in shown and "evaluation seats: buyer, seller" in shown
    assert main(["envs", "test_cli_rollout:flaky_graph"]) == 0
    assert "roles: learnt from the first episode" in capsys.readouterr().out


def test_an_environment_option_of_another_environment_is_refused(capsys, tmp_path):
    assert (
        main(["rollout", "negotiation", "--werewolf-config", "guard_8", "--out", str(tmp_path / "x.jsonl")])
        == 2
    )
    assert "unrecognized arguments: --werewolf-config" in capsys.readouterr().err
