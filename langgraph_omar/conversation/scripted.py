"""`ScriptedChatModel`: a chat model that answers from a function of its input messages and remembers
every call. For tests and scripted players: no model weights, fully deterministic. With `record_tokens`, each
call also leaves a token record (the reply's UTF-8 bytes as completion ids, log-probability 0), so that a
`TraceRecorder` records scripted games as trajectories."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from langgraph_omar.serving.records import TokenRecord, token_records


class ScriptedChatModel(BaseChatModel):
    respond: Callable[[list[BaseMessage]], str]  # the reply, computed from the messages the model saw
    calls: list[list[BaseMessage]] = Field(default_factory=list)  # every call's messages, in call order
    call_metadata: list[dict[str, Any]] = Field(default_factory=list)  # the run metadata of every call
    async_calls: int = 0  # how many calls came through the async path
    record_tokens: bool = False  # leave a token record per call, so a TraceRecorder records it as a turn

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _record(self, messages: list[BaseMessage], run_manager: Any) -> ChatResult:
        self.calls.append(list(messages))
        self.call_metadata.append(dict(getattr(run_manager, "metadata", None) or {}))
        text = self.respond(messages)
        if self.record_tokens and run_manager is not None:
            ids = list(text.encode())
            record = TokenRecord(
                prompt_ids=list("".join(m.text for m in messages).encode()),
                completion_ids=ids,
                logprobs=[0.0] * len(ids),
                text=text,
                finish_reason="stop",
                model=self._llm_type,
                adapter=None,
                adapter_version=0,
                temperature=1.0,
                top_p=1.0,
            )
            token_records.put(run_manager.run_id, record)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._record(messages, run_manager)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.async_calls += 1
        return self._record(messages, run_manager)
