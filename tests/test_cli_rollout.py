from __future__ import annotations

from typing import TypedDict

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
    episodes = read_episodes(out)
    assert [e.status for e in episodes] == ["ok", "failed", "ok"]
    assert "this episode breaks" in episodes[1].error and len(episodes[1].turns) == 1
    assert "failed 1" in capsys.readouterr().out


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
