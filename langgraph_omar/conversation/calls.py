"""The shared action layer between a role's model call and its recorded turn, for every environment.

A role node asks its model through `invoke_model` / `ainvoke_model`: the call gets a fresh run id (its
`call_id`, which the trace recorder keeps as `Turn.run_id`), and its run metadata names the acting `role` (what
baselines and evaluation group by, and what `adapter_by_role` seats), the acting `agent` (whose turn chain the
turn extends: a Werewolf player; default the role) and any `turn_metadata`, which the recorder copies into
`Turn.metadata`. Records of the node's state update that concern that call
carry its id (`stamp_call`), so the recorder puts them on the turn: a `fallbacks` record sets `Turn.fallback`,
a `turn_rewards` record (`turn_reward`) sets `Turn.reward`. The trainer then reads fallbacks and per-turn
rewards from the turns alone, whatever the game. (The id is the run id of the runnable called: give a chat
model, not a chain around one, whose inner chat-model run would get an id of its own.)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar

from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig

from langgraph_omar.tracing import CALL_ID, TURN_METADATA, TURN_REWARDS

__all__ = [
    "CALL_ID",
    "TURN_REWARDS",
    "ModelReply",
    "TurnReward",
    "ainvoke_model",
    "call_config",
    "invoke_model",
    "reply_text",
    "stamp_call",
    "turn_reward",
]

Record = TypeVar("Record", bound=Mapping[str, Any])


class TurnReward(TypedDict):
    """A per-turn reward (MARO's behaviour-level reward) of the model call `call_id`."""

    call_id: str
    reward: float
    reason: str


@dataclass(frozen=True)
class ModelReply:
    text: str
    call_id: str  # the model call's run id: Turn.run_id of the recorded turn


def call_config(
    config: RunnableConfig | None,
    role: str | None = None,
    turn_metadata: Mapping[str, Any] | None = None,
    agent: str | None = None,
) -> tuple[RunnableConfig, str]:
    """The node's config for one model call: a fresh run id, and `role` / `agent` / `turn_metadata` in its
    metadata."""
    call_id = uuid.uuid4()
    metadata = dict((config or {}).get("metadata") or {})
    if role is not None:
        metadata["role"] = role
    if agent is not None:
        metadata["agent"] = agent
    if turn_metadata:
        metadata[TURN_METADATA] = {**(metadata.get(TURN_METADATA) or {}), **turn_metadata}
    return {**(config or {}), "metadata": metadata, "run_id": call_id}, str(call_id)


def reply_text(reply: object, who: str = "model") -> str:
    """The text of a model's reply: a message's text (content blocks joined) or a plain string."""
    if isinstance(reply, BaseMessage):
        return reply.text
    if isinstance(reply, str):
        return reply
    raise ValueError(f"{who}: model returned {type(reply).__name__}; expected a chat message or a str")


def invoke_model(
    model: Runnable,
    messages: Sequence[BaseMessage],
    config: RunnableConfig | None,
    *,
    role: str | None = None,
    turn_metadata: Mapping[str, Any] | None = None,
    agent: str | None = None,
) -> ModelReply:
    """Call `model` on `messages` with the node's config (callbacks and metadata propagate), as one call whose
    records can name it (see the module docstring)."""
    call, call_id = call_config(config, role, turn_metadata, agent)
    return ModelReply(reply_text(model.invoke(list(messages), call), _who(role)), call_id)


async def ainvoke_model(
    model: Runnable,
    messages: Sequence[BaseMessage],
    config: RunnableConfig | None,
    *,
    role: str | None = None,
    turn_metadata: Mapping[str, Any] | None = None,
    agent: str | None = None,
) -> ModelReply:
    """The async twin of `invoke_model`."""
    call, call_id = call_config(config, role, turn_metadata, agent)
    return ModelReply(reply_text(await model.ainvoke(list(messages), call), _who(role)), call_id)


def _who(role: str | None) -> str:
    return "model" if role is None else f"role {role!r}"


def stamp_call(records: Sequence[Record], call_id: str | None) -> list[Record]:
    """Copies of `records` naming the model call `call_id` (unchanged when there is no call: a person, a script)."""
    if call_id is None:
        return list(records)
    return [{**record, CALL_ID: call_id} for record in records]  # type: ignore[misc]


def turn_reward(call_id: str, reward: float, reason: str) -> TurnReward:
    return TurnReward(call_id=call_id, reward=float(reward), reason=reason)
