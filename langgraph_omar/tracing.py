"""Capture of every chat-model call in any LangGraph run, without touching the graph.

`TraceRecorder` is a LangChain callback handler. Pass it in `config["callbacks"]`, or use it as a context
manager, which adds it to every run started inside the block (LangChain's configure hook, the mechanism
behind `collect_runs`). Runs are grouped into episodes by `config["metadata"]["episode_id"]`, else the
LangGraph thread id, else one episode per top-level run. The final state of each top-level run supplies
`rewards` ({role: float}), `agent_rewards` ({agent: float}), `reward_dimensions`, `metrics` and `fallbacks` when
the graph writes them. An agent's terminal reward is its own `agent_rewards` entry, else its role's (see
`Episode.reward_of`); a role that `rewards` does not name, whose every agent has an entry, gets their mean, which
is what evaluation seats and per-role metrics read.

Every call of any LangChain chat model becomes a turn with its role and agent (`role_of`, `agent_of`: the run
metadata's "role" and "agent", from the node's `metadata=` or the call's config), the messages it was given and
its text.
A call of the local policy (`ChatPolicy`) is recorded token for token: its prompt ids, completion ids and
sampling log-probabilities come from the engine through the `token_records` side channel (`source`
"policy"). Any other chat model's call (a hosted model, a fake one in a test) is recorded as text with its
model name (`source` "model", no ids, no log-probabilities: never PPO data). A person's move through
`interrupt` is recorded when the node reports it with `record_human_turn` (the conversation graphs' human
roles do; `source` "human").

Per-turn annotations (see `langgraph_omar.conversation.calls`): a call's run metadata `turn_metadata` is copied
into its turn's metadata; final-state records that name a call by `call_id` (its run id) land on its turn:
a `fallbacks` record sets `Turn.fallback`, the `turn_rewards` records of a call set `Turn.reward` (their sum).
"""

from __future__ import annotations

import threading
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.callbacks.manager import dispatch_custom_event
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.tracers.context import register_configure_hook

from langgraph_omar.errors import first_line
from langgraph_omar.messages import to_chat_dicts
from langgraph_omar.serving.records import TokenRecord, token_records
from langgraph_omar.trajectory import SOURCES, Episode, Turn, agent_of, role_of
from langgraph_omar.trajectory.metadata import episode_fields

_active_recorder: ContextVar[TraceRecorder | None] = ContextVar("omar_trace_recorder", default=None)
register_configure_hook(_active_recorder, inheritable=True)

TURN_METADATA = "turn_metadata"  # run metadata: {name: JSON value} copied into the call's Turn.metadata
CALL_ID = "call_id"  # in a final-state record: the model call (its run id) the record is about
TURN_REWARDS = "turn_rewards"  # final-state key: [{call_id, reward, ...}], per-turn rewards
HUMAN_TURN_EVENT = "omar_human_turn"  # the custom callback event of `record_human_turn`


def record_human_turn(role: str, messages: list[BaseMessage], text: str, agent: str | None = None) -> None:
    """Report a person's move (the resume value of an `interrupt`) from inside a graph node, so that a
    `TraceRecorder` records it as a turn of `role` (source "human"; its agent `agent`, default the role) given
    `messages`. A LangChain custom callback event: without a recorder it goes nowhere."""
    data = {"role": role, "messages": list(messages), "text": text}
    dispatch_custom_event(HUMAN_TURN_EVENT, data | ({"agent": agent} if agent else {}))


def source_counts(episodes: list[Episode]) -> dict[str, int]:
    """Turns per source over `episodes`: {"policy": n, "model": n, "human": n}."""
    counts = dict.fromkeys(SOURCES, 0)
    for episode in episodes:
        for source, n in episode.source_counts().items():
            counts[source] += n
    return counts


@dataclass
class _Call:
    order: int
    episode_id: str
    node: str
    role: str
    agent: str
    step: int
    messages: list[dict[str, str]]
    model: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class _EpisodeBuilder:
    episode: Episode
    turns: list[tuple[int, Turn]] = field(default_factory=list)


class TraceRecorder(BaseCallbackHandler):
    """Records every chat-model call of the runs it sees as trajectory turns.

    >>> with TraceRecorder() as rec:
    ...     graph.invoke(inputs, {"metadata": {"episode_id": "e1"}})
    >>> rec.export("trajectories.jsonl")
    """

    raise_error = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parents: dict[UUID, UUID | None] = {}
        self._root_episode: dict[UUID, str] = {}
        self._calls: dict[UUID, _Call] = {}
        self._episodes: dict[str, _EpisodeBuilder] = {}
        self._order = 0
        self._token: Token[TraceRecorder | None] | None = None

    # ---- context manager --------------------------------------------------------------------------
    def __enter__(self) -> TraceRecorder:
        self._token = _active_recorder.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _active_recorder.reset(self._token)
            self._token = None

    # ---- run tree -----------------------------------------------------------------------------------
    def _root(self, run_id: UUID) -> UUID:
        while (parent := self._parents.get(run_id)) is not None:
            run_id = parent
        return run_id

    def _episode_for(self, run_id: UUID, metadata: dict[str, Any] | None) -> str:
        metadata = metadata or {}
        root = self._root(run_id)
        if root not in self._root_episode:
            key = metadata.get("episode_id") or metadata.get("thread_id") or str(root)
            self._root_episode[root] = str(key)
        episode_id = self._root_episode[root]
        if episode_id not in self._episodes:
            meta = episode_fields(metadata)
            self._episodes[episode_id] = _EpisodeBuilder(Episode(episode_id=episode_id, metadata=meta))
        return episode_id

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        with self._lock:
            self._parents[run_id] = parent_run_id
            if parent_run_id is None:
                self._episode_for(run_id, metadata)

    def on_chain_end(
        self, outputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        if parent_run_id is not None or not isinstance(outputs, dict):
            return
        with self._lock:
            builder = self._episodes.get(self._root_episode.get(run_id, ""))
            if builder is None:
                return
            episode = builder.episode
            episode.rewards.update({k: float(v) for k, v in (outputs.get("rewards") or {}).items()})
            episode.agent_rewards.update(
                {k: float(v) for k, v in (outputs.get("agent_rewards") or {}).items()}
            )
            _fill_role_rewards(episode, [turn for _, turn in builder.turns], outputs.get("rewards") or {})
            episode.reward_dimensions.update(outputs.get("reward_dimensions") or {})
            if outputs.get("metrics"):
                episode.metadata["metrics"] = outputs["metrics"]
            if outputs.get("fallbacks"):
                episode.metadata["fallbacks"] = list(outputs["fallbacks"])
            _annotate_turns([turn for _, turn in builder.turns], outputs)

    def on_chain_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kw: Any
    ) -> None:
        if parent_run_id is not None or type(error).__name__ == "GraphInterrupt":
            return
        with self._lock:
            builder = self._episodes.get(self._root_episode.get(run_id, ""))
            if builder is not None:
                builder.episode.status = "failed"
                builder.episode.error = first_line(error, 500, with_type=True)

    # ---- model calls --------------------------------------------------------------------------------
    def _call(self, run_id: UUID, parent_run_id: UUID | None, metadata: dict[str, Any] | None) -> _Call:
        """Where a call or move of run `run_id` belongs (under the lock)."""
        metadata = metadata or {}
        self._parents.setdefault(run_id, parent_run_id)
        call = _Call(
            order=self._order,
            episode_id=self._episode_for(run_id, metadata),
            node=str(metadata.get("langgraph_node", "model")),
            role=role_of(metadata),
            agent=agent_of(metadata),
            step=int(metadata.get("langgraph_step", 0)),
            messages=[],
            model="",
            metadata=dict(metadata.get(TURN_METADATA) or {}),
        )
        self._order += 1
        return call

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        with self._lock:
            call = self._call(run_id, parent_run_id, metadata)
            call.messages = to_chat_dicts(messages[0]) if messages else []
            invocation = kwargs.get("invocation_params") or {}
            call.model = _model_name(serialized, metadata or {}, invocation)
            if tools := _tool_names(invocation):
                call.metadata["tools"] = tools
            self._calls[run_id] = call

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        record = token_records.pop(run_id)
        with self._lock:
            call = self._calls.pop(run_id, None)
            if call is None:
                return
            if record is not None:  # the local policy: token for token
                turn = Turn(
                    role=call.role,
                    agent=call.agent,
                    node=call.node,
                    text=record.text,
                    prompt_ids=record.prompt_ids,
                    completion_ids=record.completion_ids,
                    logprobs=record.logprobs,
                    step=call.step,
                    finish_reason=record.finish_reason,
                    temperature=record.temperature,
                    adapter=record.adapter,
                    adapter_version=record.adapter_version,
                    run_id=str(run_id),
                    metadata=_policy_turn_metadata(call.metadata, record, response),
                    source="policy",
                    model=record.model,
                    messages=call.messages,
                )
                self._episodes[call.episode_id].episode.metadata.setdefault("model", record.model)
            else:
                turn = _text_turn(call, response, run_id)
            self._episodes[call.episode_id].turns.append((call.order, turn))

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            self._calls.pop(run_id, None)

    def on_custom_event(
        self,
        name: str,
        data: Any,
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if name != HUMAN_TURN_EVENT:
            return
        with self._lock:
            call = self._call(run_id, None, metadata)
            turn = Turn(
                role=str(data["role"]),
                agent=str(data.get("agent") or data["role"]),
                node=call.node,
                text=str(data["text"]),
                prompt_ids=[],
                completion_ids=[],
                logprobs=[],
                step=call.step,
                run_id=str(run_id),
                source="human",
                messages=to_chat_dicts(data["messages"]),
            )
            self._episodes[call.episode_id].turns.append((call.order, turn))

    def source_counts(self) -> dict[str, int]:
        """Turns recorded so far per source: {"policy": n, "model": n, "human": n}."""
        return source_counts(self.trajectories())

    # ---- results ------------------------------------------------------------------------------------
    def trajectories(self) -> list[Episode]:
        """The recorded episodes, each with its turns in call order."""
        with self._lock:
            episodes = []
            for builder in self._episodes.values():
                builder.episode.turns = [t for _, t in sorted(builder.turns, key=lambda pair: pair[0])]
                episodes.append(builder.episode)
            return episodes

    def export(self, path: str | Path) -> int:
        """Append the episodes to a JSONL or Parquet file (episode-atomic, no duplicates); returns how many."""
        from langgraph_omar.trajectory import write_episodes

        return write_episodes(path, self.trajectories())


def _fill_role_rewards(episode: Episode, turns: list[Turn], named: dict[str, Any]) -> None:
    """Give each role of `turns` that the final state's `rewards` (`named`) leaves out the mean of its agents'
    `agent_rewards`, when every agent of the role that acted has one (else an agent without one would inherit
    the others' through its role)."""
    agents: dict[str, set[str]] = {}
    for turn in turns:
        agents.setdefault(turn.role, set()).add(turn.agent)
    for role, names in agents.items():
        if role not in named and names <= episode.agent_rewards.keys():
            episode.rewards[role] = sum(episode.agent_rewards[a] for a in names) / len(names)


def _annotate_turns(turns: list[Turn], final_state: dict[str, Any]) -> None:
    """Final-state records naming a model call by CALL_ID onto that call's turn (idempotent: a resumed run's
    final state repeats its records)."""
    by_call = {turn.run_id: turn for turn in turns}
    for record in final_state.get("fallbacks") or []:
        if isinstance(record, dict) and (turn := by_call.get(str(record.get(CALL_ID)))) is not None:
            turn.fallback = str(record.get("fallback") or "fallback")
    rewards: dict[str, float] = {}
    for i, record in enumerate(final_state.get(TURN_REWARDS) or []):
        if not isinstance(record, dict) or CALL_ID not in record or "reward" not in record:
            raise ValueError(f"final state {TURN_REWARDS}[{i}]: expected {{call_id, reward}}, got {record!r}")
        call_id = str(record[CALL_ID])
        if call_id in by_call:
            rewards[call_id] = rewards.get(call_id, 0.0) + float(record["reward"])
    for call_id, reward in rewards.items():
        by_call[call_id].reward = reward


def _tool_names(invocation: dict[str, Any]) -> list[str]:
    """The names of the tools a call was offered (`bind_tools`: OpenAI-format dicts in its invocation)."""
    names = []
    for spec in invocation.get("tools") or []:
        if isinstance(spec, dict):
            name = (spec.get("function") or {}).get("name") or spec.get("name")
            if name:
                names.append(str(name))
    return names


def _response_tool_calls(response: LLMResult) -> list[dict[str, Any]]:
    generation = response.generations[0][0] if response.generations and response.generations[0] else None
    if isinstance(generation, ChatGeneration):
        return [dict(c) for c in getattr(generation.message, "tool_calls", None) or []]
    return []


def _policy_turn_metadata(
    metadata: dict[str, Any], record: TokenRecord, response: LLMResult
) -> dict[str, Any]:
    """A policy turn's metadata: the call's, the prompt messages dropped to fit (if any), whether its grammar
    closed it early (`serving.closing`), the tool calls made."""
    metadata = dict(metadata)
    if record.truncated_messages:
        metadata["truncated_messages"] = record.truncated_messages
    if record.extra.get("closed_early"):
        metadata["closed_early"] = True
    if tool_calls := _response_tool_calls(response):
        metadata["tool_calls"] = tool_calls
    return metadata


def _model_name(
    serialized: dict[str, Any] | None, metadata: dict[str, Any], invocation: dict[str, Any]
) -> str:
    """The chat model's name as LangChain reports it: `ls_model_name`, else the invocation's model
    parameter, else the model's class name."""
    for value in (
        metadata.get("ls_model_name"),
        invocation.get("model"),
        invocation.get("model_name"),
        invocation.get("model_id"),
    ):
        if isinstance(value, str) and value:
            return value
    ids = (serialized or {}).get("id") or ["unknown"]
    return str((serialized or {}).get("name") or ids[-1])


def _text_turn(call: _Call, response: LLMResult, run_id: UUID) -> Turn:
    """A turn of a chat model other than the local policy: its text, model name and finish reason, no ids."""
    generation = response.generations[0][0] if response.generations and response.generations[0] else None
    text, finish_reason, model, metadata = "", "stop", call.model, {}
    if generation is not None:
        text = generation.text
        info = generation.generation_info or {}
        if isinstance(generation, ChatGeneration):
            text = generation.message.text
            info = {**info, **generation.message.response_metadata}
            tool_calls = getattr(generation.message, "tool_calls", None)
            if tool_calls:
                metadata["tool_calls"] = [dict(c) for c in tool_calls]
        finish_reason = str(info.get("finish_reason") or info.get("stop_reason") or "stop")
        model = str(info.get("model_name") or info.get("model") or model)
    return Turn(
        role=call.role,
        agent=call.agent,
        node=call.node,
        text=text,
        prompt_ids=[],
        completion_ids=[],
        logprobs=[],
        step=call.step,
        finish_reason=finish_reason,
        run_id=str(run_id),
        metadata={**call.metadata, **metadata},
        source="model",
        model=model,
        messages=call.messages,
    )
