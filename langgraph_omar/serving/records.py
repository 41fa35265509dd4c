"""What the engine returns for one model call, and the side channel that carries it to tracing.

The token record is the unit of token fidelity: the ids the model saw and produced, and the log-probability
of each produced id under the sampling distribution (log-softmax of logits / temperature, taken before any
top-k / top-p truncation, and before any grammar's mask). These are the "old" log-probabilities of the PPO
ratio: the trainer recomputes the same unmasked quantity, so constrained turns train like any other (see
`sampling` for the reasons and the PPO consequence). A constrained call's `extra` says so:
`{"constraint": kind, "masked_logprobs": [...]}`, the latter under the grammar-restricted distribution, and
`"closed_early": True` when tokens were forced to close the output before `max_tokens` (`serving.closing`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any
from uuid import UUID


@dataclass(frozen=True)
class TokenRecord:
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]  # one per completion id
    text: str  # the text handed to the caller: special tokens and a matched stop string removed
    finish_reason: str  # "stop" (end-of-sequence token), "stop_string" or "length"
    model: str
    adapter: str | None
    adapter_version: int
    temperature: float
    top_p: float
    truncated_messages: int = 0  # oldest messages dropped to fit the context window
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RecordChannel:
    """Token records keyed by LangChain run id, kept out of messages, graph state and checkpoints.

    Bounded: when nobody collects records (no TraceRecorder), the oldest are dropped.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self._records: OrderedDict[UUID, TokenRecord] = OrderedDict()
        self._lock = threading.Lock()
        self.capacity = capacity

    def put(self, run_id: UUID, record: TokenRecord) -> None:
        with self._lock:
            self._records[run_id] = record
            while len(self._records) > self.capacity:
                self._records.popitem(last=False)

    def pop(self, run_id: UUID) -> TokenRecord | None:
        with self._lock:
            return self._records.pop(run_id, None)


token_records = RecordChannel()
