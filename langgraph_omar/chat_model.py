"""`ChatPolicy`: the LangChain chat-model face of the shared policy.

Cheap to construct: the engine loads on first call and is shared through `SharedPolicy.get`, so a graph can
hold one `ChatPolicy` per role and still run one model in batches. Each call's token record goes to the
`token_records` side channel keyed by the LangChain run id, never into the message.
"""

from __future__ import annotations

import asyncio
import json
import queue
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from operator import itemgetter
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
)
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import ConfigDict, Field

from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.serving.models import DEFAULT_MODEL
from langgraph_omar.serving.records import TokenRecord, token_records
from langgraph_omar.serving.sampling import SamplingParams, derive_seed
from langgraph_omar.trajectory import ADAPTER_BY_ROLE, role_of

_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "user", "function": "user"}


def to_chat_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages -> chat-template dicts. Any order and any number of system/human/AI messages.

    A message's `name` (a speaker in a multi-party transcript) is kept as a "name: " prefix, since most chat
    templates have no field for it; a ChatMessage with a custom role is sent as a user turn the same way.
    """
    out = []
    for message in messages:
        content = message.text if hasattr(message, "text") else str(message.content)
        role, speaker = _ROLES.get(message.type, "user"), message.name
        if isinstance(message, ChatMessage) and message.role not in ("system", "user", "assistant"):
            role, speaker = "user", message.name or message.role
        if speaker and role == "user":
            content = f"{speaker}: {content}"
        out.append({"role": role, "content": content})
    return out


def _format_instruction(schema: dict[str, Any]) -> str:
    """Small models follow a filled-in template far better than a JSON schema, so show one when we can."""
    properties = schema.get("properties")
    if isinstance(properties, dict) and properties:
        fields = ", ".join(
            f'"{k}": <{v.get("type", "value")}>' for k, v in properties.items() if isinstance(v, dict)
        )
        return f"Answer with one JSON object only, no other text, in this form: {{{fields}}}"
    return "Answer with one JSON object only, no other text, that matches this JSON schema: " + json.dumps(
        schema, ensure_ascii=False
    )


class ChatPolicy(BaseChatModel):
    """A chat model served by the shared local policy (one model for all roles, batched).

    Example:
        .. code-block:: python

            from langgraph_omar import ChatPolicy

            seller = ChatPolicy(temperature=0.7, max_tokens=64)
            buyer = ChatPolicy(temperature=0.7, max_tokens=64, adapter="runs/neg/adapter")
            seller.invoke("How much for the bike?")
    """

    model_name: str = Field(default=DEFAULT_MODEL, alias="model")
    """An embedded model name, a local transformers model directory, or a hub id."""
    temperature: float = 0.7
    """Sampling temperature; 0 is greedy."""
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 256
    """The most new tokens per call."""
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    seed: int | None = None
    """Seed of this call's sampler (same seed, same prompt, same output)."""
    adapter: str | None = None
    """A LoRA adapter: the name of one loaded in the engine, or a path to load; None is the base model."""
    device: str | None = None
    """torch device; default cuda when available, else cpu."""

    model_config = ConfigDict(populate_by_name=True, protected_namespaces=())

    @property
    def _llm_type(self) -> str:
        return "omar-chat-policy"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "adapter": self.adapter,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="langgraph-omar",
            ls_model_name=kwargs.get("model", self.model_name),
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
            ls_max_tokens=kwargs.get("max_tokens", self.max_tokens),
        )
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    @property
    def engine(self) -> SharedPolicy:
        return SharedPolicy.get(self.model_name, self.device)

    # ---- request building -------------------------------------------------------------------------
    def _prepare(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any], run_manager: Any
    ) -> tuple[SharedPolicy, list[int], SamplingParams, str | None, int]:
        """Render the prompt and build the request. Without a seed of its own, a call inside a run whose
        metadata has `sampling_seed` (one per episode, set by the rollout) is seeded from that and its prompt
        tokens, so concurrent episodes sample the same tokens whatever the batch they land in. A run whose
        metadata has `adapter_by_role` ({role: adapter or None}) seats that adapter in that role's calls: one
        graph serves a self-play episode and an episode against the base model alike."""
        engine = self.engine
        run_metadata = getattr(run_manager, "metadata", None) or {}
        options: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "adapter": self.adapter,
        }
        unknown = set(kwargs) - set(options) - {"response_format", "ls_structured_output_format"}
        if unknown:
            raise ValueError(
                f"ChatPolicy got unsupported arguments {sorted(unknown)}; accepted: {sorted(options)}"
            )
        options.update({k: v for k, v in kwargs.items() if k in options})
        seats = run_metadata.get(ADAPTER_BY_ROLE) or {}
        if role_of(run_metadata) in seats:
            options["adapter"] = seats[role_of(run_metadata)]
        chat = to_chat_dicts(messages)
        if kwargs.get("response_format") is not None:
            chat.append({"role": "system", "content": _format_instruction(kwargs["response_format"])})
        params = SamplingParams(
            temperature=options["temperature"],
            top_p=options["top_p"],
            top_k=options["top_k"],
            max_new_tokens=options["max_tokens"],
            stop=tuple(stop if stop is not None else self.stop or ()),
            seed=options["seed"],
        )
        prompt_ids, dropped = engine.render(chat, params.max_new_tokens)
        episode_seed = run_metadata.get("sampling_seed")
        if params.seed is None and episode_seed is not None:
            params = replace(params, seed=derive_seed(episode_seed, *prompt_ids))
        adapter = engine.ensure_adapter(options["adapter"]) if options["adapter"] else None
        return engine, prompt_ids, params, adapter, dropped

    def _result(self, record: TokenRecord, run_id: Any) -> ChatResult:
        if run_id is not None:
            token_records.put(run_id, record)
        return ChatResult(generations=[ChatGeneration(message=self._message(record))])

    def _message(self, record: TokenRecord) -> AIMessage:
        return AIMessage(
            content=record.text,
            usage_metadata={
                "input_tokens": len(record.prompt_ids),
                "output_tokens": len(record.completion_ids),
                "total_tokens": len(record.prompt_ids) + len(record.completion_ids),
            },
            response_metadata={
                "model_name": self.model_name,
                "finish_reason": record.finish_reason,
                "adapter": record.adapter,
                "adapter_version": record.adapter_version,
                "model_provider": "langgraph-omar",
            },
        )

    # ---- LangChain entry points ---------------------------------------------------------------------
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        engine, ids, params, adapter, dropped = self._prepare(messages, stop, kwargs, run_manager)
        record = engine.submit(ids, params, adapter, truncated_messages=dropped).result()
        return self._result(record, run_manager.run_id if run_manager else None)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        engine, ids, params, adapter, dropped = self._prepare(messages, stop, kwargs, run_manager)
        record = await asyncio.wrap_future(engine.submit(ids, params, adapter, truncated_messages=dropped))
        return self._result(record, run_manager.run_id if run_manager else None)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        engine, ids, params, adapter, dropped = self._prepare(messages, stop, kwargs, run_manager)
        tokens: queue.Queue[int] = queue.Queue()
        future = engine.submit(ids, params, adapter, on_token=tokens.put, truncated_messages=dropped)
        stream = _TextStream(engine, params.stop)
        while not (future.done() and tokens.empty()):
            try:
                token = tokens.get(timeout=0.05)
            except queue.Empty:
                continue
            delta = stream.push(token)
            if delta:
                if run_manager:
                    run_manager.on_llm_new_token(delta)
                yield ChatGenerationChunk(message=AIMessageChunk(content=delta))
        last = self._last_chunk(future.result(), stream)
        yield last
        self._file_record(future.result(), last, run_manager)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        engine, ids, params, adapter, dropped = self._prepare(messages, stop, kwargs, run_manager)
        loop = asyncio.get_running_loop()
        tokens: asyncio.Queue[int | None] = asyncio.Queue()
        future = engine.submit(
            ids,
            params,
            adapter,
            on_token=lambda t: loop.call_soon_threadsafe(tokens.put_nowait, t),
            truncated_messages=dropped,
        )
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(tokens.put_nowait, None))
        stream = _TextStream(engine, params.stop)
        while (token := await tokens.get()) is not None:
            delta = stream.push(token)
            if delta:
                if run_manager:
                    await run_manager.on_llm_new_token(delta)
                yield ChatGenerationChunk(message=AIMessageChunk(content=delta))
        last = self._last_chunk(future.result(), stream)
        yield last
        self._file_record(future.result(), last, run_manager)

    def _last_chunk(self, record: TokenRecord, stream: _TextStream) -> ChatGenerationChunk:
        full = self._message(record)
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content=record.text[stream.emitted :],
                usage_metadata=full.usage_metadata,
                response_metadata=full.response_metadata,
                chunk_position="last",
            )
        )

    @staticmethod
    def _file_record(record: TokenRecord, last: ChatGenerationChunk, run_manager: Any) -> None:
        """Put a streamed call's record in the side channel under its run id.

        `BaseChatModel.stream` does not hand `_stream` its run manager; it stamps each yielded chunk's
        message id with "lc_run--<run id>" instead, which is read here after the last chunk was taken.
        """
        if run_manager is not None:
            token_records.put(run_manager.run_id, record)
        elif (message_id := last.message.id or "").startswith("lc_run--"):
            token_records.put(UUID(message_id.removeprefix("lc_run--")), record)

    # ---- structured output ------------------------------------------------------------------------
    def with_structured_output(  # type: ignore[override]
        self, schema: dict[str, Any] | type, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, Any]:
        """JSON output for a pydantic model, TypedDict or JSON schema, asked for in a system message.

        A 135M model has no tool calling, so this uses prompting plus parsing; output that does not parse
        raises `OutputParserException` naming the schema (or, with include_raw, is returned as
        `parsing_error`).
        """
        kwargs.pop("method", None)
        kwargs.pop("strict", None)
        if kwargs:
            raise ValueError(f"unsupported arguments {sorted(kwargs)}")
        json_schema = convert_to_json_schema(schema)
        llm = self.bind(
            response_format=json_schema,
            ls_structured_output_format={"kwargs": {"method": "json_schema"}, "schema": json_schema},
        )
        base_parser: Runnable[Any, Any]
        if isinstance(schema, type) and is_basemodel_subclass(schema):
            base_parser = PydanticOutputParser(pydantic_object=schema)
        else:
            base_parser = JsonOutputParser()
        title = json_schema.get("title", "the requested JSON schema")

        def parse(message: BaseMessage) -> Any:
            try:
                return base_parser.invoke(message)
            except (OutputParserException, ValueError) as exc:
                raise OutputParserException(
                    f"model output does not parse as {title}: {message.text[:200]!r}", llm_output=message.text
                ) from exc

        parser = RunnableLambda(parse)
        if include_raw:
            parse_raw = RunnablePassthrough.assign(
                parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
            )
            on_error = RunnablePassthrough.assign(parsed=lambda _: None)
            return RunnableMap(raw=llm) | parse_raw.with_fallbacks([on_error], exception_key="parsing_error")
        return llm | parser


class _TextStream:
    """Token ids -> text deltas. With stop strings, holds back as many characters as the longest stop string
    could still cover, so no delta ever shows text the final message drops."""

    def __init__(self, engine: SharedPolicy, stops: tuple[str, ...]) -> None:
        self.engine = engine
        self.ids: list[int] = []
        self.emitted = 0
        self.hold = max((len(s) for s in stops), default=0)

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.engine.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the next token
            return ""
        ready = len(text) - self.hold
        if ready <= self.emitted:
            return ""
        delta, self.emitted = text[self.emitted : ready], ready
        return delta
