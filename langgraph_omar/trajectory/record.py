"""The on-disk record of an episode: one shape for JSONL lines and Parquet rows alike.

An `Episode` holds mappings (`rewards`, `reward_dimensions`, free-form `metadata`); a file holds what every
format and HF `datasets` can type the same way in every row:
- `rewards`: a list of `{"role", "value"}`; `agent_rewards`: a list of `{"agent", "value"}`;
  `reward_dimensions`: a list of `{"role", "name", "value"}`;
- `metadata` (of the episode and of each turn): JSON text;
- every other field as it is (`messages` a list of `{"role", "content"}`).
`episode_record` writes that shape and `record_to_dict` reads it back into `Episode.to_dict()`'s layout (then
validated field by field); older records are upgraded on the way (version 2: no `agent` in turns, which
`Turn` reads as the role, no `agent_rewards`; version 1: also mappings in JSONL, no `source`, `model` or
`messages` in turns).
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from langgraph_omar.trajectory.episode import SCHEMA_VERSION, Episode, Turn


def _json_text(value: Any, episode_id: str, what: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (ValueError, TypeError) as e:
        raise ValueError(f"episode {episode_id!r} cannot be written as JSON: {what}: {e}") from e


def episode_record(episode: Episode) -> dict[str, Any]:
    """The episode as a file holds it. Lists (token ids, messages) are shared with `episode`: read only.
    (Built field by field: `dataclasses.asdict` deep-copies every token id, which costs more than the whole
    JSON encoding of a long episode.)"""
    data = {f.name: getattr(episode, f.name) for f in fields(Episode)}
    data["rewards"] = [{"role": role, "value": value} for role, value in episode.rewards.items()]
    data["agent_rewards"] = [
        {"agent": agent, "value": value} for agent, value in episode.agent_rewards.items()
    ]
    data["reward_dimensions"] = [
        {"role": role, "name": name, "value": value}
        for role, dims in episode.reward_dimensions.items()
        for name, value in dims.items()
    ]
    data["metadata"] = _json_text(episode.metadata, episode.episode_id, "metadata")
    turns = []
    for i, turn in enumerate(episode.turns):
        row = {f.name: getattr(turn, f.name) for f in fields(Turn)}
        row["metadata"] = _json_text(turn.metadata, episode.episode_id, f"turn {i} metadata")
        turns.append(row)
    data["turns"] = turns
    return data


def record_to_dict(record: dict[str, Any]) -> dict[str, Any]:
    """A record of a readable schema version -> `Episode.to_dict()`'s layout at SCHEMA_VERSION. Raises
    ValueError naming the key for a record whose lists or JSON texts do not have the record's shape."""
    data = _upgraded_from_v1(record) if record.get("schema_version") == 1 else dict(record)
    data["schema_version"] = SCHEMA_VERSION
    data["rewards"] = {
        item["role"]: item["value"] for item in _items(data.get("rewards"), "rewards", ("role", "value"))
    }
    data["agent_rewards"] = {
        item["agent"]: item["value"]
        for item in _items(data.get("agent_rewards"), "agent_rewards", ("agent", "value"))
    }
    dimensions: dict[str, dict[str, Any]] = {}
    for item in _items(data.get("reward_dimensions"), "reward_dimensions", ("role", "name", "value")):
        dimensions.setdefault(item["role"], {})[item["name"]] = item["value"]
    data["reward_dimensions"] = dimensions
    data["metadata"] = _decode_json(data.get("metadata"), "metadata")
    turns = data.get("turns")
    if isinstance(turns, list):
        data["turns"] = [
            {**t, "metadata": _decode_json(t.get("metadata"), f"turn {i}: metadata")}
            if isinstance(t, dict)
            else t
            for i, t in enumerate(turns)
        ]
    return data


def _items(value: Any, key: str, names: tuple[str, ...]) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) and set(v) == set(names) for v in value):
        shape = "{" + ", ".join(names) + "}"
        raise ValueError(f"key {key!r} should be a list of {shape}, got {_short(value)}")
    return value


def _decode_json(text: Any, key: str) -> Any:
    if text is None:
        return {}
    if not isinstance(text, str):
        raise ValueError(f"key {key!r} should be JSON text, got {type(text).__name__} {_short(text)}")
    try:
        return json.loads(text)
    except ValueError as e:
        raise ValueError(f"key {key!r} is not valid JSON ({e})") from e


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _upgraded_from_v1(record: dict[str, Any]) -> dict[str, Any]:
    """A version 1 record in version 2's record shape. Version 1 JSONL held mappings where version 2 holds
    lists and JSON text (its Parquet rows already had them); every version 1 turn was the policy's own."""
    data = dict(record)
    if isinstance(data.get("rewards"), dict):
        data["rewards"] = [{"role": r, "value": v} for r, v in data["rewards"].items()]
    dimensions = data.get("reward_dimensions")
    if isinstance(dimensions, dict):
        if not all(isinstance(d, dict) for d in dimensions.values()):
            raise ValueError(
                f"key 'reward_dimensions' should be {{role: {{name: value}}}}, got {_short(dimensions)}"
            )
        data["reward_dimensions"] = [
            {"role": r, "name": n, "value": v} for r, dims in dimensions.items() for n, v in dims.items()
        ]
    if isinstance(data.get("metadata"), dict):
        data["metadata"] = json.dumps(data["metadata"])
    metadata = _decode_json(data.get("metadata"), "metadata")
    model = metadata.get("model") if isinstance(metadata, dict) else None
    turns = data.get("turns")
    if isinstance(turns, list):
        data["turns"] = [_upgraded_turn(t, model) if isinstance(t, dict) else t for t in turns]
    return data


def _upgraded_turn(turn: dict[str, Any], model: Any) -> dict[str, Any]:
    upgraded: dict[str, Any] = {"source": "policy", "model": model if isinstance(model, str) else None}
    upgraded["messages"] = []
    upgraded.update(turn)
    if isinstance(turn.get("metadata"), dict):
        upgraded["metadata"] = json.dumps(turn["metadata"])
    return upgraded
