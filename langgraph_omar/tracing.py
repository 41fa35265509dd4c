"""Token-faithful capture of every ChatPolicy call in any LangGraph run, without touching the graph.

`TraceRecorder` is a LangChain callback handler. Pass it in `config["callbacks"]`, or use it as a context
manager, which adds it to every run started inside the block (LangChain's configure hook, the mechanism
behind `collect_runs`). Runs are grouped into episodes by `config["metadata"]["episode_id"]`, else the
LangGraph thread id, else one episode per top-level run. The token ids come from the engine through the
`token_records` side channel; the final state of each top-level run supplies `rewards`,
`reward_dimensions`, `metrics` and `fallbacks` when the graph writes them.

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
from langchain_core.outputs import LLMResult
from langchain_core.tracers.context import register_configure_hook

from langgraph_omar.serving.records import token_records
from langgraph_omar.trajectory import Episode, Turn, role_of

_active_recorder: ContextVar[TraceRecorder | None] = ContextVar("omar_trace_recorder", default=None)
register_configure_hook(_active_recorder, inheritable=True)

EPISODE_METADATA_KEYS = ("scenario_id", "group_id", "seed")
TURN_METADATA = "turn_metadata"  # run metadata: {name: JSON value} copied into the call's Turn.metadata
CALL_ID = "call_id"  # in a final-state record: the model call (its run id) the record is about
TURN_REWARDS = "turn_rewards"  # final-state key: [{call_id, reward, ...}], per-turn rewards


@dataclass
class _Call:
    order: int
    episode_id: str
    node: str
    role: str
    step: int
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
        self.missing_records = 0  # chat-model calls that carried no token record (not a ChatPolicy)

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
            meta = {k: metadata[k] for k in EPISODE_METADATA_KEYS if k in metadata}
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
                builder.episode.error = f"{type(error).__name__}: {error}".splitlines()[0][:500]

    # ---- model calls --------------------------------------------------------------------------------
    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        metadata = metadata or {}
        with self._lock:
            self._parents[run_id] = parent_run_id
            node = str(metadata.get("langgraph_node", "model"))
            self._calls[run_id] = _Call(
                order=self._order,
                episode_id=self._episode_for(run_id, metadata),
                node=node,
                role=role_of(metadata),
                step=int(metadata.get("langgraph_step", 0)),
                metadata=dict(metadata.get(TURN_METADATA) or {}),
            )
            self._order += 1

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        record = token_records.pop(run_id)
        with self._lock:
            call = self._calls.pop(run_id, None)
            if call is None:
                return
            if record is None:
                self.missing_records += 1
                return
            turn = Turn(
                role=call.role,
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
                metadata={**call.metadata, "truncated_messages": record.truncated_messages}
                if record.truncated_messages
                else call.metadata,
            )
            builder = self._episodes[call.episode_id]
            builder.turns.append((call.order, turn))
            builder.episode.metadata.setdefault("model", record.model)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            self._calls.pop(run_id, None)

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
