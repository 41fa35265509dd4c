"""An episode's run metadata: the typed contract between the code that plans episodes (`omar rollout`, self-play,
the arena, the demo) and the layers that read it (the chat model's sampling seed, the recorder, the advantage
batch). `episode_metadata` is its one builder; the keys are spelled here.

The metadata travels as the run's `config["metadata"]` (a plain dict, as LangChain passes it to every call),
and the recorder keeps the contract's keys (`EPISODE_KEYS`) in `Episode.metadata`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from langgraph_omar.trajectory.episode import ADAPTER_BY_ROLE

EPISODE_ID = "episode_id"
SAMPLING_SEED = "sampling_seed"
SCENARIO_ID = "scenario_id"
GROUP_ID = "group_id"


class EpisodeMetadata(TypedDict, total=False):
    """The run metadata of one episode; every key is optional to the readers."""

    episode_id: str  # the episode (and its LangGraph thread); missing: NAME-SEED (rollout.with_episode_ids)
    seed: int  # the scenario seed: the environment's sample_input / sample_config
    sampling_seed: int  # every call of the episode samples from it and its prompt tokens (ChatPolicy)
    scenario_id: str  # the scenario: episodes sharing it are compared (filtered-bc, the EMA baseline's key)
    group_id: str  # the episodes of one group (group-relative advantages)
    baseline_key: str  # the EMA baseline's key in place of the scenario (self-play: the environment)
    iteration: int  # the self-play iteration that played it
    adapter_by_role: dict[str, str | None]  # {role: adapter, None: base} seated in place of the graph's model


# The keys the recorder copies from a run's metadata into Episode.metadata (the episode id is the Episode's own).
EPISODE_KEYS = tuple(k for k in EpisodeMetadata.__annotations__ if k != EPISODE_ID)
assert ADAPTER_BY_ROLE in EPISODE_KEYS  # the constant and the contract spell it alike


def episode_metadata(
    seed: int,
    *,
    env: str | None = None,
    episode_id: str | None = None,
    sampling_seed: int | None = None,
    scenario_id: str | None = None,
    group_id: str | None = None,
    baseline_key: str | None = None,
    iteration: int | None = None,
    adapter_by_role: Mapping[str, str | None] | None = None,
) -> EpisodeMetadata:
    """The metadata of the episode on scenario seed `seed`: `sampling_seed` defaults to `seed` (the games of
    one seed draw the same numbers for the same prompt) and, given the environment's name `env`, `scenario_id`
    to `ENV-SEED`. Keys left None are left out."""
    meta: dict[str, Any] = {
        EPISODE_ID: episode_id,
        "seed": seed,
        SAMPLING_SEED: seed if sampling_seed is None else sampling_seed,
        SCENARIO_ID: scenario_id if scenario_id is not None or env is None else f"{env}-{seed}",
        GROUP_ID: group_id,
        "baseline_key": baseline_key,
        "iteration": iteration,
        ADAPTER_BY_ROLE: dict(adapter_by_role) if adapter_by_role is not None else None,
    }
    return EpisodeMetadata(**{k: v for k, v in meta.items() if v is not None})  # type: ignore[typeddict-item]


def episode_fields(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The contract's keys of a run's metadata (which also holds LangGraph's own: thread_id, langgraph_node...),
    as kept in `Episode.metadata`."""
    return {k: metadata[k] for k in EPISODE_KEYS if k in metadata}
