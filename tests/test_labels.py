"""Rewards after the fact: the Python labelling API and `--reward module:function` loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from langgraph_omar.errors import OmarError
from langgraph_omar.trajectory import Episode, Turn, read_episodes, write_episodes
from langgraph_omar.trajectory.labels import (
    apply_rewards,
    label_file,
    load_reward_function,
    set_reward_dimensions,
    set_role_reward,
    set_turn_reward,
)


def traced(episode_id: str) -> Episode:
    """A production trace: a hosted model's turns, no rewards yet."""
    turns = [
        Turn(
            role,
            role,
            f"{role} {i}",
            [],
            [],
            [],
            source="model",
            messages=[{"role": "user", "content": "hi"}],
        )
        for i, role in enumerate(["agent", "customer", "agent"])
    ]
    return Episode(episode_id, turns=turns)


def test_set_a_roles_reward_a_turns_reward_and_reward_dimensions():
    episode = traced("e1")
    set_role_reward(episode, "agent", 1)
    set_turn_reward(episode, 2, -0.25)
    set_reward_dimensions(episode, "agent", {"goal": 7.0})
    set_reward_dimensions(episode, "agent", {"believability": 8})
    assert episode.rewards == {"agent": 1.0} and isinstance(episode.rewards["agent"], float)
    assert [t.reward for t in episode.turns] == [0.0, 0.0, -0.25]
    assert episode.reward_dimensions == {"agent": {"goal": 7.0, "believability": 8.0}}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda e: set_role_reward(e, "agnet", 1.0),
            r"episode 'e1': no turn of role 'agnet' \(its roles: agent, customer\)",
        ),
        (
            lambda e: set_role_reward(e, "agent", float("nan")),
            r"role 'agent' reward: expected a finite number, got nan",
        ),
        (lambda e: set_role_reward(e, "agent", True), r"expected a finite number, got True"),
        (lambda e: set_role_reward(e, "agent", "1"), r"expected a finite number, got '1'"),
        (lambda e: set_turn_reward(e, 3, 1.0), r"episode 'e1': no turn 3 \(it has 3 turns\)"),
        (
            lambda e: set_reward_dimensions(e, "agent", {"goal": float("inf")}),
            r"dimension 'goal': expected a finite",
        ),
    ],
)
def test_bad_labels_are_refused_and_change_nothing(call, message):
    episode = traced("e1")
    with pytest.raises(ValueError, match=message):
        call(episode)
    assert episode == traced("e1")


def test_apply_rewards_from_a_function_or_a_mapping_by_episode_id():
    episodes = [traced("a"), traced("b")]
    apply_rewards(episodes, lambda e: {"agent": 1.0 if e.episode_id == "a" else 0.0})
    assert [e.rewards for e in episodes] == [{"agent": 1.0}, {"agent": 0.0}]
    apply_rewards(episodes, {"b": {"customer": 0.5, "agent": 2.0}})
    assert episodes[1].rewards == {"agent": 2.0, "customer": 0.5}
    with pytest.raises(ValueError, match=r"rewards name episodes that are not there: \['zz'\]"):
        apply_rewards(episodes, {"zz": {"agent": 1.0}})
    with pytest.raises(ValueError, match=r"reward function .*<lambda>: episode 'a': no turn of role 'judge'"):
        apply_rewards(episodes, lambda e: {"judge": 1.0})
    with pytest.raises(
        ValueError, match=r"reward function .*<lambda>: episode 'a': rewards must be a mapping"
    ):
        apply_rewards(episodes, lambda e: 1.0)
    with pytest.raises(ValueError, match=r"failed on episode 'a': KeyError: 'sale'"):
        apply_rewards(episodes, lambda e: {"agent": e.metadata["sale"]})


@pytest.mark.parametrize("name", ["traces.jsonl", "traces.parquet"])
def test_label_file_in_place_or_to_another_file(tmp_path: Path, name: str):
    path = tmp_path / name
    write_episodes(path, [traced("a"), traced("b")])
    assert label_file(path, {"a": {"agent": 1.0}}) == 2
    assert [e.rewards for e in read_episodes(path)] == [{"agent": 1.0}, {}]
    out = tmp_path / "labelled.jsonl"
    assert label_file(path, lambda e: {"customer": 0.5}, out=out) == 2
    assert [e.rewards for e in read_episodes(out)] == [{"agent": 1.0, "customer": 0.5}, {"customer": 0.5}]


def test_load_reward_function_by_module_or_file(tmp_path: Path):
    function = load_reward_function("hosted_roles:seller_wins")
    assert function(traced("a")) == {"seller": 1.0, "buyer": 0.0}
    script = tmp_path / "rewards.py"
    script.write_text("def sale(episode):\n    return {'agent': float(len(episode.turns))}\n")
    assert load_reward_function(f"{script}:sale")(traced("a")) == {"agent": 3.0}
    for spec, message in [
        ("hosted_roles", r"--reward hosted_roles: expected module:function"),
        ("no_such_module_xyz:f", r"--reward no_such_module_xyz:f: cannot import no_such_module_xyz"),
        ("hosted_roles:nothing", r"hosted_roles has no function 'nothing'"),
        ("hosted_roles:BUYER_LINES", r"hosted_roles has no function 'BUYER_LINES'"),
        (f"{tmp_path}/missing.py:f", r"no such file"),
    ]:
        with pytest.raises(OmarError, match=message):
            load_reward_function(spec)
