"""`omar rollout` keeps every finished episode when killed part-way, and a rerun appends only what is missing.

The graph here (`held_graph`) finishes the episodes of seeds below HELD_FROM at once and holds the others
until a release file exists, so a run can be killed at a known point: the first episodes done, the rest not.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TypedDict

import pytest
from adapter_helpers import save_tiny_base
from langgraph.graph import END, START, StateGraph

from langgraph_omar.cli import main
from langgraph_omar.rollout import run_episodes, stable_episode_id, with_episode_ids
from langgraph_omar.trajectory import read_episodes

TESTS = Path(__file__).resolve().parent
RELEASE = "OMAR_TEST_RELEASE"  # the file whose existence lets held episodes finish
HELD_FROM = 3
EPISODES = 6


class HeldState(TypedDict, total=False):
    seed: int
    reply: str
    rewards: dict[str, float]


def held_graph(model: Any) -> Any:
    async def speaker(state: HeldState) -> dict[str, Any]:
        reply = await model.ainvoke(f"Say something about {state['seed']}.")
        while state["seed"] >= HELD_FROM and not Path(os.environ[RELEASE]).exists():
            await asyncio.sleep(0.05)
        return {"reply": reply.text, "rewards": {"speaker": float(state["seed"])}}

    graph = StateGraph(HeldState)
    graph.add_node("speaker", speaker, metadata={"role": "speaker"})
    graph.add_edge(START, "speaker")
    graph.add_edge("speaker", END)
    return graph.compile()


def sample_input(seed: int) -> dict[str, Any]:
    return {"seed": seed}


def _rollout(model: Path, out: Path, release: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "langgraph_omar.cli", "rollout", "test_rollout_durability:held_graph"]
    command += ["--model", str(model), "--episodes", str(EPISODES), "--max-tokens", "4", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent), RELEASE: str(release), "OMP_NUM_THREADS": "1"}
    env["PYTHONFAULTHANDLER"] = "1"  # a run that hangs prints its threads' stacks on SIGABRT
    return subprocess.Popen(command, cwd=TESTS, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _readable_episodes(out: Path) -> list[Any]:
    try:
        return read_episodes(out)
    except FileNotFoundError:
        return []


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("suffix", "stop"),
    [(".jsonl", signal.SIGKILL), (".parquet", signal.SIGKILL), (".parquet", signal.SIGINT)],
    ids=["jsonl-kill-9", "parquet-kill-9", "parquet-ctrl-c"],
)
def test_a_killed_rollout_keeps_finished_episodes_and_a_rerun_appends_the_rest(
    tmp_path: Path, suffix: str, stop: signal.Signals
) -> None:
    model = save_tiny_base(tmp_path / "model")
    out, release = tmp_path / f"episodes{suffix}", tmp_path / "release"
    victim = _rollout(model, out, release)
    deadline = time.monotonic() + 120
    while victim.poll() is None and len(_readable_episodes(out)) < HELD_FROM and time.monotonic() < deadline:
        time.sleep(0.05)
    assert victim.poll() is None, victim.communicate()[1].decode()[-2000:]
    os.kill(victim.pid, stop)
    try:
        victim.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # a hang: SIGABRT makes faulthandler print every thread's stack
        victim.send_signal(signal.SIGABRT)
        pytest.fail(
            f"no exit 60 s after {stop.name}; its threads:\n{victim.communicate()[1].decode()[-6000:]}"
        )
    assert victim.returncode == (-signal.SIGKILL if stop == signal.SIGKILL else 130)
    kept = read_episodes(out)
    assert sorted(e.metadata["seed"] for e in kept) == list(range(HELD_FROM))
    assert all(e.status == "ok" and e.turns for e in kept)
    if stop == signal.SIGINT:
        return  # the rerun is the same as after kill -9 (each process costs seconds of imports)

    release.touch()
    rerun = _rollout(model, out, release)
    stdout, stderr = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, stderr.decode()[-2000:]
    assert f"wrote {EPISODES - HELD_FROM} episodes" in stdout.decode()
    episodes = read_episodes(out)
    assert sorted(e.metadata["seed"] for e in episodes) == list(range(EPISODES))
    assert len({e.episode_id for e in episodes}) == EPISODES
    assert [e.to_dict() for e in episodes[:HELD_FROM]] == [e.to_dict() for e in kept]  # untouched


def test_episode_ids_follow_from_the_graph_and_the_seed() -> None:
    ids = [m["episode_id"] for m in with_episode_ids("g", 4, [{"seed": 5}, {"seed": 5}, {}, {"seed": 7}])]
    assert ids == ["g-5", "g-5-2", "g-2", "g-7"]  # a repeated seed stays unique within the call
    assert ids == [
        m["episode_id"] for m in with_episode_ids("g", 4, [{"seed": 5}, {"seed": 5}, {}, {"seed": 7}])
    ]
    given = with_episode_ids("g", 2, [{"episode_id": "g-5"}, {"seed": 5}])
    assert [m["episode_id"] for m in given] == ["g-5", "g-5-2"]
    with pytest.raises(ValueError, match="given to more than one episode"):
        with_episode_ids("g", 2, [{"episode_id": "x"}, {"episode_id": "x"}])
    settings = {"options": {"kind": "split"}, "model": "tiny", "temperature": 0.7}
    assert stable_episode_id("neg", 3, settings) == stable_episode_id(
        "neg", 3, dict(reversed(settings.items()))
    )
    assert stable_episode_id("neg", 3, settings) != stable_episode_id(
        "neg", 3, {**settings, "temperature": 1.0}
    )
    assert stable_episode_id("neg", 3, settings) != stable_episode_id("neg", 4, settings)


def test_rerunning_a_rollout_appends_nothing_new(
    policy: Any, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RELEASE, str(tmp_path))  # exists: nothing is held
    out = tmp_path / "e.jsonl"
    command = ["rollout", "test_rollout_durability:held_graph", "--model", "tiny", "--max-tokens", "4"]
    assert main([*command, "--episodes", "2", "--out", str(out)]) == 0
    assert main([*command, "--episodes", "2", "--out", str(out)]) == 0
    assert "wrote 0 episodes" in capsys.readouterr().out
    assert len(read_episodes(out)) == 2
    assert main([*command, "--episodes", "3", "--out", str(out)]) == 0  # one seed more: one episode more
    assert len(read_episodes(out)) == 3
    assert main([*command, "--episodes", "2", "--temperature", "0.1", "--out", str(out)]) == 0
    assert len(read_episodes(out)) == 5  # other settings: episodes of their own


def test_an_episode_the_writer_refuses_stops_the_rollout_loudly(tmp_path: Path) -> None:
    def reward(state: HeldState) -> dict[str, Any]:
        return {"rewards": {"speaker": math.nan if state["seed"] == 2 else 1.0}}

    graph = StateGraph(HeldState)
    graph.add_node("speaker", reward)
    graph.add_edge(START, "speaker")
    graph.add_edge("speaker", END)
    out = tmp_path / "e.jsonl"
    with pytest.raises(ValueError, match="non-finite value in rewards"):
        run_episodes(
            graph.compile(), [{"seed": i} for i in range(4)], max_concurrency=1, progress=False, out=out
        )
    assert all(e.rewards["speaker"] == 1.0 for e in _readable_episodes(out))  # what was written reads back
