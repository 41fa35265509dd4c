"""Rewards after the fact: label recorded episodes with outcomes that arrive later (a sale, a rating, a judge).

    from langgraph_omar.trajectory import read_episodes, write_episodes
    from langgraph_omar.trajectory.labels import set_role_reward, set_turn_reward, label_file

    episodes = read_episodes("traces.jsonl")
    set_role_reward(episodes[0], "seller", 1.0)        # the terminal reward of a role
    set_turn_reward(episodes[0], 3, -0.2)              # one turn's own reward (Turn.reward)
    label_file("traces.jsonl", {"ep-17": {"seller": 1.0, "buyer": 0.0}})   # by episode id, in place
    label_file("traces.jsonl", my_module.reward, out="labelled.jsonl")      # a function of each Episode

A reward function takes an `Episode` and returns `{role: float}` (the roles it rewards; the others keep what
they have). On the command line the same function is `--reward module:function` (or `path/to/file.py:function`).
Every value must be a finite number and every role one that took a turn in the episode: a typo fails loud.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
from collections.abc import Callable, Iterable, Mapping
from numbers import Real
from pathlib import Path
from typing import Any

from langgraph_omar.errors import OmarError
from langgraph_omar.trajectory.episode import Episode

RewardFunction = Callable[[Episode], Mapping[str, float]]


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValueError(f"{what}: expected a finite number, got {value!r}")
    return float(value)


def _check_role(episode: Episode, role: Any) -> str:
    if role not in episode.roles:
        raise ValueError(
            f"episode {episode.episode_id!r}: no turn of role {role!r} (its roles: {', '.join(episode.roles)})"
        )
    return str(role)


def set_role_reward(episode: Episode, role: str, value: float) -> None:
    """Set `role`'s terminal reward in `episode` (replacing any it had)."""
    role = _check_role(episode, role)
    episode.rewards[role] = _finite(value, f"episode {episode.episode_id!r} role {role!r} reward")


def set_turn_reward(episode: Episode, turn_index: int, value: float) -> None:
    """Set the own reward of `episode.turns[turn_index]` (a per-turn reward, added to the role's return)."""
    if not 0 <= turn_index < len(episode.turns):
        raise ValueError(
            f"episode {episode.episode_id!r}: no turn {turn_index} (it has {len(episode.turns)} turns)"
        )
    episode.turns[turn_index].reward = _finite(
        value, f"episode {episode.episode_id!r} turn {turn_index} reward"
    )


def set_reward_dimensions(episode: Episode, role: str, dimensions: Mapping[str, float]) -> None:
    """Set named scores of `role` (a judge's "goal", "believability", ...), keeping its other dimensions."""
    role = _check_role(episode, role)
    checked = {
        str(name): _finite(value, f"episode {episode.episode_id!r} role {role!r} dimension {name!r}")
        for name, value in dimensions.items()
    }
    episode.reward_dimensions.setdefault(role, {}).update(checked)


def set_rewards(episode: Episode, rewards: Mapping[str, float]) -> None:
    """Set the terminal rewards of several roles at once, checked before any is set."""
    if not isinstance(rewards, Mapping):
        raise ValueError(
            f"episode {episode.episode_id!r}: rewards must be a mapping {{role: float}}, got "
            f"{type(rewards).__name__}"
        )
    checked = {
        _check_role(episode, role): _finite(value, f"episode {episode.episode_id!r} role {role!r} reward")
        for role, value in rewards.items()
    }
    episode.rewards.update(checked)


def apply_rewards(
    episodes: Iterable[Episode], rewards: RewardFunction | Mapping[str, Mapping[str, float]]
) -> list[Episode]:
    """Label `episodes` in place: with a function of each episode returning `{role: float}`, or with a
    mapping `{episode_id: {role: float}}` (an id it names that is not among the episodes raises). Returns
    the episodes."""
    episodes = list(episodes)
    if callable(rewards):
        name = getattr(rewards, "__qualname__", repr(rewards))
        for episode in episodes:
            try:
                values = rewards(episode)
            except Exception as e:  # the user's code: one line naming it and the episode, not a traceback
                raise ValueError(
                    f"reward function {name} failed on episode {episode.episode_id!r}: {type(e).__name__}: {e}"
                ) from e
            try:
                set_rewards(episode, values)
            except ValueError as e:
                raise ValueError(f"reward function {name}: {e}") from e
        return episodes
    by_id = {episode.episode_id: episode for episode in episodes}
    unknown = sorted(set(rewards) - set(by_id))
    if unknown:
        raise ValueError(f"rewards name episodes that are not there: {unknown[:5]}")
    for episode_id, values in rewards.items():
        set_rewards(by_id[episode_id], values)
    return episodes


def label_file(
    path: str | os.PathLike[str],
    rewards: RewardFunction | Mapping[str, Mapping[str, float]],
    out: str | os.PathLike[str] | None = None,
) -> int:
    """Label every episode of the trajectory file `path` (see `apply_rewards`) and write them to `out`
    (default: `path` itself, replaced atomically). Returns how many episodes were written."""
    from langgraph_omar.trajectory import read_episodes, write_episodes

    episodes = apply_rewards(read_episodes(path), rewards)
    return write_episodes(out if out is not None else path, episodes, append=False)


def load_reward_function(spec: str) -> RewardFunction:
    """The function named by `module:function` (an importable module) or `path/to/file.py:function`."""
    module_name, sep, attribute = spec.rpartition(":")
    if not sep or not module_name or not attribute:
        raise OmarError(f"--reward {spec}: expected module:function or path/to/file.py:function")
    try:
        if module_name.endswith(".py"):
            location = Path(module_name)
            if not location.is_file():
                raise OmarError(f"--reward {spec}: no such file {location}")
            module_spec = importlib.util.spec_from_file_location(location.stem, location)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as e:
        raise OmarError(f"--reward {spec}: cannot import {module_name} ({e})") from e
    function = getattr(module, attribute, None)
    if not callable(function):
        raise OmarError(f"--reward {spec}: {module_name} has no function {attribute!r}")
    return function  # type: ignore[no-any-return]
