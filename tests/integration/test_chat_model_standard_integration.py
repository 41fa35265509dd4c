"""LangChain's standard integration suite for ChatPolicy on the real default model."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests

from langgraph_omar import ChatPolicy

pytestmark = pytest.mark.integration

# Structured output and forced tool calls are written under a grammar, so they parse whenever the reply ends
# before max_tokens; a joke's two strings (at most 100 characters each, see `bound_schema`) need more than the
# 16 tokens the rest of the suite runs with.
STRUCTURED_MAX_TOKENS = 96


class TestChatPolicyIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatPolicy]:
        return ChatPolicy

    @property
    def chat_model_params(self) -> dict:
        return {"model": "smollm2-135m-instruct", "temperature": 0, "max_tokens": 16}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @pytest.fixture
    def model(self, request: Any) -> ChatPolicy:
        """The suite's model; tests that write JSON (structured output, forced tool calls) get more tokens."""
        structured = any(word in request.node.name for word in ("structured", "json", "tool", "agent"))
        extra = getattr(request, "param", None) or {}
        if structured:
            extra = {**extra, "max_tokens": STRUCTURED_MAX_TOKENS}
        return self.chat_model_class(**{**self.standard_chat_model_params, **self.chat_model_params, **extra})
