"""`ChatPolicy`: the LangChain chat-model face of the shared policy.

Cheap to construct: the engine loads on first call and is shared through `SharedPolicy.get`, so a graph can
hold one `ChatPolicy` per role and still run one model in batches. Each call's token record goes to the
`token_records` side channel keyed by the LangChain run id, never into the message.

Tools and structured output (`bind_tools`, `with_structured_output`) are constrained where a guarantee is asked
for: a forced tool call (`tool_choice` "any"/"required"/a tool's name) and the json_schema and json_mode
methods decode under a grammar (`serving.constraints`) that closes what is open when `max_tokens` runs short
(`serving.closing`), so even the 135M default model returns a result that parses on every call whose cap leaves
room for the shortest one. Such a call's record holds the sampled ids and their log-probabilities under the
unmasked distribution, the one the trainer recomputes (the masked ones are in `extra["masked_logprobs"]`; see
`serving.sampling` for why and what it means for PPO): constrained and tool-call turns train like any other.
"""

from __future__ import annotations

import asyncio
import json
import queue
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import ConfigDict, Field

from langgraph_omar.messages import to_chat_dicts
from langgraph_omar.serving.constraints import Constraint
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.serving.models import DEFAULT_MODEL
from langgraph_omar.serving.records import TokenRecord, token_records
from langgraph_omar.serving.sampling import SamplingParams, derive_seed
from langgraph_omar.tool_calls import (
    TAG_OPEN,
    CallGate,
    ToolSet,
    json_template,
    normalize_tool_choice,
    parse_tool_calls,
)
from langgraph_omar.trajectory import ADAPTER_BY_ROLE, role_of
from langgraph_omar.trajectory.metadata import SAMPLING_SEED

__all__ = ["ChatPolicy", "to_chat_dicts"]
_CALL_OPTIONS = {
    "response_format",
    "ls_structured_output_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
}
STRUCTURED_METHODS = ("json_schema", "json_mode", "function_calling")


def _format_instruction(schema: dict[str, Any] | None) -> str:
    """Small models follow a filled-in template far better than a JSON schema, so show one when we can."""
    template = json_template(schema or {})
    if template is not None:
        return f"Answer with one JSON object only, no other text, in this form: {template}"
    if not schema or schema == {"type": "object"}:
        return "Answer with one JSON object only, no other text."
    return "Answer with one JSON object only, no other text, that matches this JSON schema: " + json.dumps(
        schema, ensure_ascii=False
    )


def response_constraint(response_format: dict[str, Any]) -> tuple[Constraint, str | None]:
    """A `response_format` call option -> the grammar and the instruction added to the prompt (None: none).

    Accepted: a JSON schema; {"type": "json_schema", "json_schema": {"schema": ...}} (OpenAI's shape);
    {"type": "json_object"} (any JSON object; an optional "schema" key only shapes the instruction);
    {"type": "regex", "regex": pattern} (the prompt itself must explain the format).
    """
    kind = response_format.get("type")
    if kind == "json_object":
        return Constraint.json_object(), _format_instruction(response_format.get("schema"))
    if kind == "regex":
        return Constraint.regex(str(response_format["regex"])), None
    if kind == "json_schema" and isinstance(response_format.get("json_schema"), dict):
        response_format = response_format["json_schema"].get("schema") or {}
    return Constraint.json_schema(response_format), _format_instruction(response_format)


@dataclass(frozen=True)
class _Call:
    """One prepared call: the engine, the prompt, the sampling, the grammar and the tools it was made with."""

    engine: SharedPolicy
    prompt_ids: list[int]
    params: SamplingParams
    adapter: str | None
    dropped: int
    constraint: Constraint | None
    tools: ToolSet | None

    def submit(self, on_token: Callable[[int], object] | None = None) -> Any:
        return self.engine.submit(
            self.prompt_ids,
            self.params,
            self.adapter,
            on_token=on_token,
            truncated_messages=self.dropped,
            constraint=self.constraint,
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
    ) -> _Call:
        """Render the prompt and build the request. Without a seed of its own, a call inside a run whose
        metadata has `sampling_seed` (one per episode, set by the rollout) is seeded from that and its prompt
        tokens, so concurrent episodes sample the same tokens whatever the batch they land in. A run whose
        metadata has `adapter_by_role` ({role: adapter or None}) seats that adapter in that role's calls: one
        graph serves a self-play episode and an episode against the base model alike. Bound tools are shown
        (see `tool_calls`); a forced tool call or a `response_format` constrains the output."""
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
        unknown = set(kwargs) - set(options) - _CALL_OPTIONS
        if unknown:
            raise ValueError(
                f"ChatPolicy got unsupported arguments {sorted(unknown)}; accepted: {sorted(options)}"
            )
        options.update({k: v for k, v in kwargs.items() if k in options})
        seats = run_metadata.get(ADAPTER_BY_ROLE) or {}
        if role_of(run_metadata) in seats:
            options["adapter"] = seats[role_of(run_metadata)]
        tools = self._tool_set(engine, kwargs)
        chat = to_chat_dicts(messages, native_tools=engine.has_tool_template)
        constraint = tools.constraint() if tools else None
        if tools and (instruction := tools.instruction()):
            chat.append({"role": "system", "content": instruction})
        if constraint is None and kwargs.get("response_format") is not None:
            constraint, instruction = response_constraint(kwargs["response_format"])
            if instruction:
                chat.append({"role": "system", "content": instruction})
        params = SamplingParams(
            temperature=options["temperature"],
            top_p=options["top_p"],
            top_k=options["top_k"],
            max_new_tokens=options["max_tokens"],
            stop=tuple(stop if stop is not None else self.stop or ()),
            seed=options["seed"],
        )
        prompt_ids, dropped = engine.render(
            chat, params.max_new_tokens, tools.template_tools() if tools else None
        )
        episode_seed = run_metadata.get(SAMPLING_SEED)
        if params.seed is None and episode_seed is not None:
            params = replace(params, seed=derive_seed(episode_seed, *prompt_ids))
        adapter = engine.ensure_adapter(options["adapter"]) if options["adapter"] else None
        return _Call(engine, prompt_ids, params, adapter, dropped, constraint, tools)

    @staticmethod
    def _tool_set(engine: SharedPolicy, kwargs: dict[str, Any]) -> ToolSet | None:
        if not kwargs.get("tools"):
            return None
        tools = tuple(kwargs["tools"])
        names = [t["function"]["name"] for t in tools]
        template = str(getattr(engine.tokenizer, "chat_template", "") or "")
        native = engine.has_tool_template
        return ToolSet(
            tools,
            normalize_tool_choice(kwargs.get("tool_choice"), names),
            native,
            native and TAG_OPEN in template,
        )

    def _result(self, record: TokenRecord, run_id: Any, tools: ToolSet | None) -> ChatResult:
        if run_id is not None:
            token_records.put(run_id, record)
        return ChatResult(generations=[ChatGeneration(message=self._message(record, tools))])

    def _message(self, record: TokenRecord, tools: ToolSet | None) -> AIMessage:
        """The reply: the text, or with tools bound the text around the calls plus the calls themselves."""
        usage = {
            "input_tokens": len(record.prompt_ids),
            "output_tokens": len(record.completion_ids),
            "total_tokens": len(record.prompt_ids) + len(record.completion_ids),
        }
        metadata = {
            "model_name": self.model_name,
            "finish_reason": record.finish_reason,
            "adapter": record.adapter,
            "adapter_version": record.adapter_version,
            "model_provider": "langgraph-omar",
        }
        if record.extra.get("closed_early"):  # the grammar closed the output to end by max_tokens
            metadata["closed_early"] = True
        if tools is None or not tools.active:
            return AIMessage(content=record.text, usage_metadata=usage, response_metadata=metadata)  # type: ignore[arg-type]
        parsed = parse_tool_calls(record.text, tools.names)
        return AIMessage(
            content=parsed.content,
            tool_calls=parsed.tool_calls,
            invalid_tool_calls=parsed.invalid_tool_calls,
            usage_metadata=usage,  # type: ignore[arg-type]
            response_metadata=metadata,
        )

    # ---- LangChain entry points ---------------------------------------------------------------------
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._prepare(messages, stop, kwargs, run_manager)
        record = call.submit().result()
        return self._result(record, run_manager.run_id if run_manager else None, call.tools)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call = self._prepare(messages, stop, kwargs, run_manager)
        record = await asyncio.wrap_future(call.submit())
        return self._result(record, run_manager.run_id if run_manager else None, call.tools)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        call = self._prepare(messages, stop, kwargs, run_manager)
        tokens: queue.Queue[int] = queue.Queue()
        future = call.submit(on_token=tokens.put)
        stream = _TextStream(call.engine, call.params.stop, call.tools)
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
        last = self._last_chunk(future.result(), stream, call.tools)
        yield last
        self._file_record(future.result(), last, run_manager)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call = self._prepare(messages, stop, kwargs, run_manager)
        loop = asyncio.get_running_loop()
        tokens: asyncio.Queue[int | None] = asyncio.Queue()
        future = call.submit(on_token=lambda t: loop.call_soon_threadsafe(tokens.put_nowait, t))
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(tokens.put_nowait, None))
        stream = _TextStream(call.engine, call.params.stop, call.tools)
        while (token := await tokens.get()) is not None:
            delta = stream.push(token)
            if delta:
                if run_manager:
                    await run_manager.on_llm_new_token(delta)
                yield ChatGenerationChunk(message=AIMessageChunk(content=delta))
        last = self._last_chunk(future.result(), stream, call.tools)
        yield last
        self._file_record(future.result(), last, run_manager)

    def _last_chunk(
        self, record: TokenRecord, stream: _TextStream, tools: ToolSet | None
    ) -> ChatGenerationChunk:
        """The rest of the content, the usage and metadata, and the calls as tool-call chunks (one per call,
        its arguments whole: a call is known to be one only once the output is complete)."""
        full = self._message(record, tools)
        chunks = [
            tool_call_chunk(name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i)
            for i, c in enumerate(full.tool_calls)
        ]
        # Merged chunks become calls whenever their arguments parse, even partly (LangChain's rule), and chunks
        # carry no error field: an invalid call's arguments start with the reason, so it stays invalid.
        chunks += [
            tool_call_chunk(
                name=c["name"], args=f"(invalid: {c['error']}) {c['args']}", id=c["id"], index=len(chunks) + i
            )
            for i, c in enumerate(full.invalid_tool_calls)
        ]
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content=full.text[stream.emitted :],
                tool_call_chunks=chunks,
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

    # ---- tools and structured output ----------------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer `tools` (functions, pydantic models, TypedDicts, `BaseTool`s, OpenAI dicts) to the model.

        tool_choice: "auto" (default: the model decides), "any"/"required" (one call of some tool, constrained),
            a tool's name (one call of that tool, constrained), "none" (no tools shown).
        strict: accepted for compatibility; forced calls are always schema-valid, by construction.
        parallel_tool_calls: accepted for compatibility; a forced call is one call, an unforced output may hold
            several.
        """
        formatted = [convert_to_openai_tool(tool, strict=strict) for tool in tools]
        names = [t["function"]["name"] for t in formatted]
        choice = normalize_tool_choice(tool_choice, names)  # fail at bind time, not at the first call
        return super().bind(tools=formatted, tool_choice=choice, **kwargs)

    def with_structured_output(  # type: ignore[override]
        self,
        schema: dict[str, Any] | type,
        *,
        method: str = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Output parsed as a pydantic model, TypedDict or JSON schema, generated under a grammar.

        method: "json_schema" (default; decoding constrained to the schema: a schema-valid object on every
            call whose max_tokens leaves room for the shortest valid object, as near the cap the grammar closes
            what is open; the raw message's `response_metadata["closed_early"]` then says so), "json_mode"
            (constrained to some JSON object, then validated against the schema), "function_calling" (a forced
            call of a tool made from the schema, parsed back).
        Output that does not parse (a cap too small for any valid object, say) raises `OutputParserException`
        naming the schema, or with include_raw is returned as `parsing_error`.
        strict: accepted for compatibility (the grammar is strict already).
        """
        if kwargs:
            raise ValueError(f"unsupported arguments {sorted(kwargs)}")
        if method not in STRUCTURED_METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {', '.join(STRUCTURED_METHODS)}")
        is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        base_parser: Runnable[Any, Any]
        if method == "function_calling":
            tool = convert_to_openai_tool(schema)
            name = tool["function"]["name"]
            llm = self.bind_tools(
                [schema],
                tool_choice=name,
                ls_structured_output_format={"kwargs": {"method": method}, "schema": tool},
            )
            if is_pydantic:
                base_parser = PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
            else:
                base_parser = JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            title = name
        else:
            json_schema = convert_to_json_schema(schema)
            response_format = (
                json_schema if method == "json_schema" else {"type": "json_object", "schema": json_schema}
            )
            llm = self.bind(
                response_format=response_format,
                ls_structured_output_format={"kwargs": {"method": method}, "schema": json_schema},
            )
            base_parser = PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser()  # type: ignore[arg-type]
            title = json_schema.get("title", "the requested JSON schema")

        def parse(message: BaseMessage) -> Any:
            try:
                parsed = base_parser.invoke(message)
            except (OutputParserException, ValueError) as exc:
                raise OutputParserException(
                    f"model output does not parse as {title}: {message.text[:200]!r}", llm_output=message.text
                ) from exc
            if parsed is None:  # the tools parser found no call
                raise OutputParserException(f"model output holds no call of {title}", llm_output=message.text)
            return parsed

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
    could still cover, so no delta ever shows text the final message drops; with tools bound, holds back
    whatever may be a call (`CallGate`). `emitted`: how many characters of the final content went out."""

    def __init__(self, engine: SharedPolicy, stops: tuple[str, ...], tools: ToolSet | None = None) -> None:
        self.engine = engine
        self.ids: list[int] = []
        self.released = 0
        self.hold = max((len(s) for s in stops), default=0)
        self.gate = CallGate() if tools is not None and tools.active else None

    @property
    def emitted(self) -> int:
        return self.gate.passed if self.gate is not None else self.released

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.engine.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the next token
            return ""
        ready = len(text) - self.hold
        if ready <= self.released:
            return ""
        delta, self.released = text[self.released : ready], ready
        return self.gate.push(delta) if self.gate is not None else delta


JUDGE_ROLE = "judge"  # the role of every call of the commands' judge (the run metadata the judge model adds)


def served_judge(model: str, device: str | None = None, max_tokens: int | None = None) -> ChatPolicy:
    """The judge the commands give a graph: `model` served with no adapter, greedy, with a judge's budget
    (ChatPolicy's default unless `max_tokens`), not the players' turn cap. Its calls are recorded as role
    `judge`, in whatever node the graph makes them (a `score` node, a step after the graph), so they are
    never taken for a player's turns nor seated with an evaluated adapter."""
    budget: dict[str, Any] = {} if max_tokens is None else {"max_tokens": max_tokens}
    return ChatPolicy(model=model, device=device, temperature=0.0, metadata={"role": JUDGE_ROLE}, **budget)
