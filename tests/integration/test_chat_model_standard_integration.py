"""LangChain's standard integration suite for ChatPolicy on the real default model."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests

from langgraph_omar import ChatPolicy

pytestmark = pytest.mark.integration

TOO_SMALL_FOR_JSON = (
    "SmolLM2-135M does not reliably follow a JSON schema: ChatPolicy asks for the JSON and raises "
    "OutputParserException when the output does not parse, which is what happens here"
)


class TestChatPolicyIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatPolicy]:
        return ChatPolicy

    @property
    def chat_model_params(self) -> dict:
        return {"model": "smollm2-135m-instruct", "temperature": 0, "max_tokens": 16}

    @property
    def has_tool_calling(self) -> bool:
        return False  # a 135M model cannot call tools: bind_tools is not offered and these tests are skipped

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @pytest.mark.xfail(reason=TOO_SMALL_FOR_JSON, strict=False)
    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    def test_structured_output(self, model: Any, schema_type: str) -> None:
        super().test_structured_output(model, schema_type)

    @pytest.mark.xfail(reason=TOO_SMALL_FOR_JSON, strict=False)
    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    async def test_structured_output_async(self, model: Any, schema_type: str) -> None:
        await super().test_structured_output_async(model, schema_type)

    @pytest.mark.xfail(reason=TOO_SMALL_FOR_JSON, strict=False)
    def test_structured_output_pydantic_2_v1(self, model: Any) -> None:
        super().test_structured_output_pydantic_2_v1(model)

    @pytest.mark.xfail(reason=TOO_SMALL_FOR_JSON, strict=False)
    def test_structured_output_optional_param(self, model: Any) -> None:
        super().test_structured_output_optional_param(model)
