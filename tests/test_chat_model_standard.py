"""LangChain's standard unit suite for ChatPolicy (construction is lazy: no model is loaded here)."""

from __future__ import annotations

from langchain_tests.unit_tests import ChatModelUnitTests

from langgraph_omar import ChatPolicy


class TestChatPolicyUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatPolicy]:
        return ChatPolicy

    @property
    def chat_model_params(self) -> dict:
        return {"model": "smollm2-135m-instruct", "temperature": 0}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True
