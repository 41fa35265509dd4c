"""The shared policy: one model per (model, device), serving every role, episode and thread in batches.

Callers `submit` a request and get a `concurrent.futures.Future`; a single worker thread decodes them in one
running batch (continuous batching): when the worker is idle, requests that arrive together (up to
`max_batch_size`, waiting at most `max_wait_ms` for more) start a batch; while it decodes, every request that
arrives is prefilled and joins it at the next step, and each row leaves as soon as it finishes, so a short
reply never waits for other conversations' long ones. Async callers await the same future through
`asyncio.wrap_future`: no thread per call.
The worker thread is the only one that runs the model for generation; a trainer takes `exclusive()` to
update the same tensors in place. A running batch never crosses a weight change: once a trainer (or an
adapter load) asks for the model, no request joins, the rows decoding finish, the trainer gets the model, and
the requests that waited start a batch on the new weights.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from langgraph_omar.errors import OmarError
from langgraph_omar.serving.adapters import check_adapter_files, check_adapter_fits, load_error
from langgraph_omar.serving.constraints import Constraint, GrammarCompiler
from langgraph_omar.serving.decoding import (
    DecodeRequest,
    DecodeResult,
    RunningBatch,
    keep_head_input_contiguous,
)
from langgraph_omar.serving.models import DEFAULT_MODEL, load_model
from langgraph_omar.serving.precision import resolve_dtype
from langgraph_omar.serving.prefix_cache import PrefixCache
from langgraph_omar.serving.records import TokenRecord
from langgraph_omar.serving.sampling import SamplingParams
from langgraph_omar.serving.threads import adjust_threads


@dataclass
class _Pending:
    request: DecodeRequest
    future: Future[TokenRecord]
    truncated_messages: int = 0
    constraint: Constraint | None = None
    submitted: float = field(default_factory=time.monotonic)


def default_device() -> torch.device:
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def _device_key(device: str | torch.device | None) -> str:
    target = torch.device(device) if device is not None else default_device()
    if target.type == "cuda" and target.index is None:
        target = torch.device("cuda", torch.cuda.current_device())
    return str(target)


class SharedPolicy:
    """One causal LM (+ peft LoRA adapters) serving batched generation requests."""

    _registry: dict[tuple[str, str], SharedPolicy] = {}
    _registry_lock = threading.Lock()

    def __init__(
        self,
        name: str,
        model: Any,
        tokenizer: Any,
        max_batch_size: int = 64,
        max_wait_ms: float = 30.0,
        prefix_cache_mb: int = 1024,
        prefill_dtype: str | torch.dtype | None = "auto",
    ) -> None:
        """An engine over a loaded model and tokenizer; `SharedPolicy.get` loads by name and shares.

        prefix_cache_mb: memory for the keys and values of finished sequences that later prompts reuse
        (see `prefix_cache`); 0 turns the reuse off.
        prefill_dtype: the autocast type of prompt prefills ("auto", "float32", "bfloat16"; see `precision`);
        decoding runs in the weights' type.
        """
        self.model_name = name
        self.model, self.tokenizer = model.eval(), tokenizer
        keep_head_input_contiguous(model)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.device = next(model.parameters()).device
        self.prefill_dtype = resolve_dtype(prefill_dtype, "prefill", self.device)
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.adapter_versions: dict[str, int] = {}
        self.prefix_cache = PrefixCache(prefix_cache_mb * 2**20) if prefix_cache_mb > 0 else None
        self._path_names: dict[str, str] = {}
        self.context_window = int(getattr(model.config, "max_position_embeddings", 2048))
        self.eos_ids = self._eos_ids()
        self._grammars: GrammarCompiler | None = None
        self._tool_template: bool | None = None
        self._grammar_lock = threading.Lock()
        self._lock = threading.RLock()  # the model: held by the worker for a batch's life, by `exclusive()`
        self._writers = 0  # threads waiting to change the weights: while > 0, no request joins a batch
        self._writers_done = threading.Condition()  # guards `_writers`; notified when it drops
        self._queue: queue.Queue[_Pending] = queue.Queue()
        self._retry: deque[_Pending] = deque()  # requests to start again after an out-of-memory error
        self._row_cap = max_batch_size  # rows per batch: halved by an out-of-memory error, until it is served
        self._worker = threading.Thread(target=self._serve, name=f"omar-engine-{name}", daemon=True)
        self._worker.start()

    @classmethod
    def load(
        cls,
        model: str = DEFAULT_MODEL,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        **kwargs: Any,
    ) -> SharedPolicy:
        """Load `model` (an embedded name, a local directory or a hub id). dtype: the weights' type, which is
        the decode type ("auto"/None: bf16 on a GPU or on a CPU with AMX tiles, else float32; see `precision`)."""
        target = torch.device(device) if device is not None else default_device()
        loaded, tokenizer = load_model(model, target, resolve_dtype(dtype, "decode", target))
        return cls(model, loaded, tokenizer, **kwargs)

    # ---- registry -------------------------------------------------------------------------------
    @classmethod
    def get(
        cls, model: str = DEFAULT_MODEL, device: str | torch.device | None = None, **kwargs: Any
    ) -> SharedPolicy:
        """The engine for (model, device), loaded on first use and shared by every caller after."""
        key = (model, _device_key(device))
        with cls._registry_lock:
            if key not in cls._registry:
                cls._registry[key] = cls.load(model, device=key[1], **kwargs)
            return cls._registry[key]

    @classmethod
    def register(cls, policy: SharedPolicy) -> None:
        """Make an engine built by hand (a test's tiny model, say) the shared one for its name."""
        with cls._registry_lock:
            cls._registry[(policy.model_name, _device_key(policy.device))] = policy

    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update(configured if isinstance(configured, list) else [configured])
        return {i for i in ids if i is not None}

    # ---- prompts ----------------------------------------------------------------------------------
    def render(
        self,
        messages: Sequence[dict[str, Any]],
        max_new_tokens: int,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> tuple[list[int], int]:
        """Chat-template token ids for `messages` (role/content dicts), and how many were dropped.

        tools: OpenAI-format tool definitions, handed to the chat template (only meaningful when
        `has_tool_template`; other templates ignore them).
        Context policy: when prompt + max_new_tokens exceed the context window, the oldest non-system
        messages are dropped one by one (the count goes into the token record); if the last message alone
        does not fit, an OmarError is raised.
        """
        messages = list(messages)
        dropped = 0
        while True:
            ids = self._template_ids(messages, tools)
            if len(ids) + max_new_tokens <= self.context_window:
                return ids, dropped
            droppable = [i for i, m in enumerate(messages[:-1]) if m["role"] != "system"]
            if not droppable:
                raise OmarError(
                    f"prompt of {len(ids)} tokens + max_new_tokens {max_new_tokens} exceeds the context window "
                    f"({self.context_window}) of {self.model_name!r}, even with all earlier messages dropped"
                )
            del messages[droppable[0]]
            dropped += 1

    def _template_ids(self, messages: Sequence[dict[str, Any]], tools: Any) -> list[int]:
        ids = self.tokenizer.apply_chat_template(
            list(messages), tools=tools or None, add_generation_prompt=True, tokenize=True
        )
        if not isinstance(ids, list):  # transformers 5 returns a BatchEncoding
            ids = list(ids["input_ids"])
        return ids

    @property
    def has_tool_template(self) -> bool:
        """Whether the model's chat template renders tool definitions (it has a tool-calling format of its own):
        a probe conversation renders differently with a tool than without."""
        if self._tool_template is None:
            probe = [{"role": "user", "content": "hi"}]
            tool = {
                "type": "function",
                "function": {"name": "probe_tool", "description": "d", "parameters": {}},
            }
            try:
                self._tool_template = self._template_ids(probe, [tool]) != self._template_ids(probe, None)
            except Exception:  # a template that fails on tools has no usable tool format
                self._tool_template = False
        return self._tool_template

    @property
    def grammars(self) -> GrammarCompiler:
        """The grammar compiler for this model's tokenizer, built on first use (it indexes the vocabulary)."""
        with self._grammar_lock:
            if self._grammars is None:
                head = self.model.get_output_embeddings()
                vocab_size = (
                    int(head.weight.shape[0]) if head is not None else int(self.model.config.vocab_size)
                )
                self._grammars = GrammarCompiler(self.tokenizer, vocab_size, self.eos_ids)
            return self._grammars

    # ---- adapters ---------------------------------------------------------------------------------
    def load_adapter(self, path: str | Path, name: str | None = None) -> str:
        """Load a LoRA adapter (safetensors) under `name` (default: the folder name); reload bumps its version.

        An adapter that does not fit the model (`check_adapter_fits`) is an OmarError and is not kept."""
        path = Path(path).expanduser()
        check_adapter_files(path)
        name = name or path.name
        with self._model_alone():
            base = self.model
            # a first adapter wraps the plain model, injecting LoRA layers in place even when the load then
            # fails: its own layers are kept to be put back
            layers = None if isinstance(base, PeftModel) else dict(base.named_modules())
            try:
                if isinstance(self.model, PeftModel):
                    if name in self.model.peft_config:
                        self.model.delete_adapter(name)
                    self.model.load_adapter(str(path), adapter_name=name)
                else:
                    self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
                check_adapter_fits(self.model, path, self.model_name, adapter_name=name)
            except (RuntimeError, KeyError, ValueError) as exc:
                self._drop_adapter(name, base, layers)
                raise (
                    exc if isinstance(exc, OmarError) else load_error(path, self.model_name, exc)
                ) from None
            self.model.eval()
            self._weights_changed()
            self.adapter_versions[name] = self.adapter_versions.get(name, 0) + 1
        return name

    def _drop_adapter(self, name: str, base: Any, layers: dict[str, torch.nn.Module] | None) -> None:
        """Undo a failed load of adapter `name`: delete it, or, when the load wrapped the plain model `base`,
        put back `layers` (its modules before the load) and serve `base` again."""
        if layers is not None:
            for module_path, module in layers.items():
                if module_path and base.get_submodule(module_path) is not module:
                    base.set_submodule(module_path, module)
            self.model = base
        elif name in self.model.peft_config:
            self.model.delete_adapter(name)
        if isinstance(self.model, PeftModel) and not self.model.peft_config:
            self.model = (
                self.model.unload()
            )  # no adapter left (a reload deleted the only one): the plain model
        elif isinstance(self.model, PeftModel) and self.model.active_adapter not in self.model.peft_config:
            self.model.set_adapter(
                next(iter(self.model.peft_config))
            )  # peft needs one active; rows pick theirs
        self.adapter_versions.pop(name, None)  # a reload deleted the old weights of that name too
        self._weights_changed()

    def ensure_adapter(self, spec: str) -> str:
        """A loaded adapter's name for `spec`: a name already loaded, or a path, loaded on first use."""
        if spec in self.adapter_versions:
            return spec
        path = Path(spec).expanduser()
        name = self._path_names.get(str(path.resolve()))
        if name is None:
            if not path.exists():
                raise OmarError(
                    f"adapter {spec!r} is neither a loaded adapter "
                    f"({', '.join(sorted(self.adapter_versions)) or 'none loaded'}) nor an existing path"
                )
            name = self.load_adapter(path, name=f"path-{len(self._path_names)}-{path.name}".replace(".", "_"))
            self._path_names[str(path.resolve())] = name
        return name

    def add_trainable_adapter(self, name: str, config: LoraConfig) -> None:
        """A fresh LoRA adapter on the served model itself: training it changes what is served."""
        with self._model_alone():
            if isinstance(self.model, PeftModel):
                self.model.add_adapter(name, config)
            else:
                self.model = get_peft_model(self.model, config, adapter_name=name)
            self._weights_changed()
            self.adapter_versions[name] = 1

    def bump_adapter_version(self, name: str) -> int:
        with self._model_alone():
            self._weights_changed()
            self.adapter_versions[name] += 1
            return self.adapter_versions[name]

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[Any]:
        """Hold the model alone (generation waits): for training steps on the served tensors. The rows
        decoding when this is called finish first, on the old weights; no request joins them meanwhile."""
        with self._model_alone():
            try:
                yield self.model
            finally:
                self._weights_changed()

    @contextlib.contextmanager
    def _model_alone(self) -> Iterator[None]:
        """The model lock, taken to change weights: the running batch stops admitting rows and drains."""
        with self._writers_done:
            self._writers += 1
        try:
            with self._lock:
                yield
        finally:
            with self._writers_done:
                self._writers -= 1
                self._writers_done.notify_all()

    def _weights_changed(self) -> None:
        """Stored keys and values were computed with the old weights: drop them."""
        if self.prefix_cache is not None:
            self.prefix_cache.clear()

    # ---- generation -------------------------------------------------------------------------------
    def submit(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        adapter: str | None = None,
        on_token: Callable[[int], object] | None = None,
        truncated_messages: int = 0,
        constraint: Constraint | None = None,
    ) -> Future[TokenRecord]:
        """Queue one generation. constraint: a grammar the completion must match (compiled here, in the
        caller's thread, so a schema it cannot handle fails the call at once with an OmarError)."""
        if adapter is not None and adapter not in self.adapter_versions:
            raise OmarError(
                f"adapter {adapter!r} is not loaded; loaded: {sorted(self.adapter_versions) or 'none'}"
            )
        grammar = self.grammars.row(constraint) if constraint is not None else None
        future: Future[TokenRecord] = Future()
        request = DecodeRequest(prompt_ids, params, adapter, on_token, grammar)
        self._queue.put(_Pending(request, future, truncated_messages, constraint))
        return future

    def generate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        adapter: str | None = None,
        constraint: Constraint | None = None,
    ) -> TokenRecord:
        return self.submit(prompt_ids, params, adapter, constraint=constraint).result()

    async def agenerate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        adapter: str | None = None,
        constraint: Constraint | None = None,
    ) -> TokenRecord:
        return await asyncio.wrap_future(self.submit(prompt_ids, params, adapter, constraint=constraint))

    def _serve(self) -> None:
        """Start a batch from the requests that arrive together, then decode it until its last row leaves."""
        while True:
            first = self._retry.popleft() if self._retry else self._queue.get()
            group = self._collect(first)
            with self._writers_done:  # a waiting weight change goes first (the lock alone is not fair)
                self._writers_done.wait_for(lambda: not self._writers)
            adjust_threads(self.device)
            with self._lock:
                self._decode(group)
            if not self._retry:
                self._row_cap = self.max_batch_size

    def _collect(self, first: _Pending) -> list[_Pending]:
        """`first` and the requests that keep coming after it (each within `max_wait_ms` of the previous one),
        up to the row cap or 20 waits in all: episodes that reach their model call a few milliseconds apart
        (graph overhead) then share a prefill. Requests to retry come first and do not wait."""
        group = [first]
        while self._retry and len(group) < self._row_cap:
            group.append(self._retry.popleft())
        cap = time.monotonic() + 20 * self.max_wait_s
        while len(group) < self._row_cap:
            timeout = min(self.max_wait_s, cap - time.monotonic())
            try:
                group.append(self._queue.get(timeout=max(0.0, timeout)))
            except queue.Empty:
                break
        return group

    def _arrivals(self, room: int) -> list[_Pending]:
        """Up to `room` requests that are waiting now (none while a weight change waits): they join the batch."""
        arrived: list[_Pending] = []
        while len(arrived) < room and not self._writers and not self._retry:
            try:
                arrived.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return arrived

    @torch.inference_mode()
    def _decode(self, group: list[_Pending]) -> None:
        """Decode `group` and every request that joins it, delivering each result as its row finishes."""
        batch = RunningBatch(
            self.model, self.tokenizer, self.eos_ids, self.prefix_cache, prefill_dtype=self.prefill_dtype
        )
        rows: dict[int, _Pending] = {}  # the requests in the batch, by key
        joining = group
        try:
            while joining:
                rows.update((id(p), p) for p in joining)
                batch.add([p.request for p in joining], [id(p) for p in joining])
                joining = []
                while batch:
                    for key, result in batch.step():
                        pending = rows.pop(cast(int, key))
                        if not pending.future.cancelled():  # a cancelled caller is not waiting
                            pending.future.set_result(self._record(pending, result))
                    if batch.can_join and (joining := self._arrivals(self._row_cap - len(batch))):
                        break
        except torch.OutOfMemoryError:
            self._out_of_memory([*rows.values(), *(p for p in joining if id(p) not in rows)])
        except Exception as exc:  # the callers, not this thread, decide what a failure means
            for p in [*rows.values(), *(p for p in joining if id(p) not in rows)]:
                if not p.future.cancelled():
                    p.future.set_exception(exc)

    def _out_of_memory(self, pending: list[_Pending]) -> None:
        """The rows of a batch that ran out of memory start again, at most half as many at a time, first in
        line; one request alone that does not fit fails."""
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if len(pending) == 1:
            pending[0].future.set_exception(OmarError("out of memory for a single request"))
            return
        self._row_cap = max(1, len(pending) // 2)
        for p in pending:
            if p.request.grammar is not None:
                p.request.grammar.reset()
        self._retry.extendleft(reversed(pending))

    def _record(self, pending: _Pending, result: DecodeResult) -> TokenRecord:
        request = pending.request
        return TokenRecord(
            prompt_ids=list(request.prompt_ids),
            completion_ids=result.completion_ids,
            logprobs=result.logprobs,
            text=result.text,
            finish_reason=result.finish_reason,
            model=self.model_name,
            adapter=request.adapter,
            adapter_version=self.adapter_versions.get(request.adapter, 0) if request.adapter else 0,
            temperature=request.params.temperature,
            top_p=request.params.top_p,
            truncated_messages=pending.truncated_messages,
            extra=_constraint_extra(pending.constraint, result),
        )


def _constraint_extra(constraint: Constraint | None, result: DecodeResult) -> dict[str, Any]:
    """What a constrained call's record says about its grammar (see `TokenRecord`); nothing for others."""
    if constraint is None:
        return {}
    extra: dict[str, Any] = {"constraint": constraint.kind, "masked_logprobs": result.masked_logprobs}
    if result.closed_early:
        extra["closed_early"] = True
    return extra
