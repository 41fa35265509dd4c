from __future__ import annotations

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from pydantic import BaseModel

from langgraph_omar import ChatPolicy, token_records
from langgraph_omar.chat_model import to_chat_dicts


class RunIds(BaseCallbackHandler):
    def __init__(self):
        self.ids = []

    def on_chat_model_start(self, serialized, messages, *, run_id, **kwargs):
        self.ids.append(run_id)


def test_multi_party_transcripts_render_in_any_order(policy):
    messages = [
        SystemMessage("You are Bob."),
        HumanMessage("How much?", name="Alice"),
        HumanMessage("I can pay 50.", name="Carol"),
        AIMessage("100."),
        SystemMessage("Keep it short."),
        AIMessage("Final offer: 90."),
    ]
    assert to_chat_dicts(messages)[1:3] == [
        {"role": "user", "content": "Alice: How much?"},
        {"role": "user", "content": "Carol: I can pay 50."},
    ]
    reply = ChatPolicy(model="tiny", max_tokens=5, temperature=0).invoke(messages)
    assert reply.usage_metadata["output_tokens"] == 5 or reply.response_metadata["finish_reason"] == "stop"


def test_token_record_goes_to_the_side_channel_not_the_message(policy):
    handler = RunIds()
    llm = ChatPolicy(model="tiny", max_tokens=6, temperature=0)
    reply = llm.invoke("hello", {"callbacks": [handler]})
    record = token_records.pop(handler.ids[0])
    assert record is not None and record.text == reply.content
    assert "prompt_ids" not in reply.response_metadata and "completion_ids" not in str(
        reply.additional_kwargs
    )
    assert reply.usage_metadata == {
        "input_tokens": len(record.prompt_ids),
        "output_tokens": len(record.completion_ids),
        "total_tokens": len(record.prompt_ids) + len(record.completion_ids),
    }


def test_stream_and_astream_equal_invoke(policy):
    llm = ChatPolicy(model="tiny", max_tokens=12, temperature=0)
    text = llm.invoke("the quick brown fox").content
    assert "".join(c.content for c in llm.stream("the quick brown fox")) == text


async def test_astream_and_ainvoke(policy):
    llm = ChatPolicy(model="tiny", max_tokens=12, temperature=0, stop=["o"])
    text = (await llm.ainvoke("the quick brown fox")).content
    assert "o" not in text
    assert "".join([c.content async for c in llm.astream("the quick brown fox")]) == text


def test_seed_makes_sampling_reproducible(policy):
    llm = ChatPolicy(model="tiny", max_tokens=10, temperature=1.0, seed=7)
    assert llm.invoke("hello").content == llm.invoke("hello").content


async def test_episode_sampling_seed_fixes_tokens_whatever_the_batch(policy):
    llm = ChatPolicy(model="tiny", max_tokens=10, temperature=1.0)
    seeded = {"metadata": {"sampling_seed": 3}}
    alone = (await llm.ainvoke("hello", seeded)).content
    crowd = await llm.abatch(
        ["hello", "hello", "other", "hello"], [{}, seeded, {}, {"metadata": {"sampling_seed": 4}}]
    )
    assert crowd[1].content == alone
    other_seeds = {(await llm.ainvoke("hello", {"metadata": {"sampling_seed": s}})).content for s in range(6)}
    assert len(other_seeds) > 1  # the seed does matter


def test_structured_output_error_names_the_schema(policy):
    class Person(BaseModel):
        name: str

    # constrained decoding always writes the schema's JSON; only a reply cut at max_tokens can fail to parse
    with pytest.raises(OutputParserException, match="does not parse as Person"):
        ChatPolicy(model="tiny", max_tokens=2, temperature=0).with_structured_output(Person).invoke("hi")
    raw = ChatPolicy(model="tiny", max_tokens=2).with_structured_output(Person, include_raw=True).invoke("hi")
    assert raw["parsed"] is None and isinstance(raw["parsing_error"], OutputParserException)


def test_unsupported_call_arguments_are_refused(policy):
    with pytest.raises(ValueError, match="unsupported arguments"):
        ChatPolicy(model="tiny").invoke("hi", frequency_penalty=1.0)


def test_per_call_adapter_that_does_not_exist(policy):
    from langgraph_omar.errors import OmarError

    with pytest.raises(OmarError, match="neither a loaded adapter"):
        ChatPolicy(model="tiny", adapter="no/such/dir").invoke("hi")
