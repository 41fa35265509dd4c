"""`ScriptedChatModel`: a chat model that answers from a function of its input messages and remembers
every call. For tests and scripted players: no model weights, fully deterministic."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field


class ScriptedChatModel(BaseChatModel):
    respond: Callable[[list[BaseMessage]], str]  # the reply, computed from the messages the model saw
    calls: list[list[BaseMessage]] = Field(default_factory=list)  # every call's messages, in call order
    call_metadata: list[dict[str, Any]] = Field(default_factory=list)  # the run metadata of every call
    async_calls: int = 0  # how many calls came through the async path

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _record(self, messages: list[BaseMessage], metadata: dict[str, Any] | None) -> ChatResult:
        self.calls.append(list(messages))
        self.call_metadata.append(dict(metadata or {}))
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=self.respond(messages)))])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._record(messages, run_manager.metadata if run_manager else None)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.async_calls += 1
        return self._record(messages, run_manager.metadata if run_manager else None)
