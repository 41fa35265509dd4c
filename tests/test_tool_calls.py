"""Tool calling and structured output on ChatPolicy (tiny model): reading calls back, rendering tools and
results in both formats, forced calls that always parse, streaming tool-call chunks, and the
with_structured_output methods."""

from __future__ import annotations

import copy
import enum
import json

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from langgraph_omar import ChatPolicy, SharedPolicy, token_records
from langgraph_omar.testing import tiny_model, tiny_tokenizer
from langgraph_omar.tool_calls import CallGate, normalize_tool_choice, parse_tool_calls, to_chat_dicts

HERMES_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTools: {{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "{% for c in m.get('tool_calls') or [] %}<tool_call>{{ c['function'] | tojson }}</tool_call>{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@tool
def get_weather(city: str, days: int) -> str:
    """The weather forecast for a city."""
    return f"sunny in {city} for {days} days"


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class Mood(enum.StrEnum):
    calm = "calm"
    angry = "angry"


class Verdict(BaseModel):
    score: int = Field(ge=0, le=10)
    ratio: float = Field(ge=0, le=1)
    mood: Mood
    sure: bool
    labels: list[Mood] = Field(max_length=2)


class RunIds(BaseCallbackHandler):
    def __init__(self):
        self.ids = []

    def on_chat_model_start(self, serialized, messages, *, run_id, **kwargs):
        self.ids.append(run_id)


# ---- reading calls back -----------------------------------------------------------------------------


def test_calls_are_read_from_bare_and_tagged_json_and_the_rest_is_content():
    text = 'Let me check. {"name": "add", "arguments": {"a": 1, "b": 2}}\n<tool_call>{"name": "get_weather", "parameters": {"city": "Oslo", "days": 1}}</tool_call>'
    parsed = parse_tool_calls(text, ["add", "get_weather"])
    assert [(c["name"], c["args"]) for c in parsed.tool_calls] == [
        ("get_weather", {"city": "Oslo", "days": 1}),
        ("add", {"a": 1, "b": 2}),
    ]
    assert all(c["id"].startswith("call_") for c in parsed.tool_calls) and not parsed.invalid_tool_calls
    assert parsed.content == "Let me check."
    assert parse_tool_calls("Just {prose} here.", ["add"]).content == "Just {prose} here."


def test_a_raw_control_character_inside_a_string_argument_is_read_not_called_incomplete():
    # a model writes a tab or a newline inside a JSON string as the raw character; JSON's strict mode refuses it
    for text in (
        '{"name": "get_weather", "arguments": {"city": "Os\tlo\nnorth", "days": 2}}',
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Os\x0blo", "days": 2}}</tool_call>',
    ):
        parsed = parse_tool_calls(text, ["get_weather"])
        assert not parsed.invalid_tool_calls, parsed.invalid_tool_calls
        assert parsed.tool_calls[0]["args"]["days"] == 2 and parsed.tool_calls[0]["args"]["city"].startswith(
            "Os"
        )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"name": "divide", "arguments": {"a": 1}}', "unknown tool 'divide'"),
        ('{"name": "add", "arguments": [1, 2]}', "not a JSON object"),
        ('{"name": "add", "arguments": {"a": 1', "incomplete"),
        ("<tool_call>{not json}</tool_call>", "not JSON"),
    ],
)
def test_malformed_calls_are_kept_as_invalid_with_the_reason(text, error):
    parsed = parse_tool_calls(text, ["add"])
    assert not parsed.tool_calls and len(parsed.invalid_tool_calls) == 1
    assert error in parsed.invalid_tool_calls[0]["error"] and parsed.content == ""


@pytest.mark.parametrize(
    "text",
    ['Sure, {"name": "add", "arguments": {"a": 1}} done  ', "  plain text  ", "  <b>bold</b>", " {x} "],
)
def test_the_streamed_text_is_a_prefix_of_the_final_content(text):
    gate, streamed = CallGate(), ""
    for i in range(0, len(text), 3):
        streamed += gate.push(text[i : i + 3])
    content = parse_tool_calls(text, ["add"]).content
    assert content.startswith(streamed) and gate.passed == len(streamed)


def test_tool_choice_values():
    names = ["add", "get_weather"]
    assert [normalize_tool_choice(c, names) for c in (None, "auto", "any", "required", True, "none", "add")] == [
        "auto", "auto", "required", "required", "required", "none", "add"
    ]  # fmt: skip
    assert normalize_tool_choice({"type": "function", "function": {"name": "add"}}, names) == "add"
    with pytest.raises(ValueError, match="not one of"):
        normalize_tool_choice("divide", names)


# ---- rendering --------------------------------------------------------------------------------------


HISTORY = [
    HumanMessage("What is 1 + 2?"),
    AIMessage("", tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "c1", "type": "tool_call"}]),
    ToolMessage("3", name="add", tool_call_id="c1"),
    ToolMessage("Error: b missing", name="add", tool_call_id="c2", status="error"),
]


def test_calls_and_results_render_as_text_without_a_tool_template():
    chat = to_chat_dicts(HISTORY)
    assert chat[1] == {"role": "assistant", "content": '{"name": "add", "arguments": {"a": 1, "b": 2}}'}
    assert chat[2] == {"role": "user", "content": "Tool add returned: 3"}
    assert chat[3] == {"role": "user", "content": "Tool add failed: Error: b missing"}


def test_calls_and_results_use_the_template_fields_when_it_has_them():
    chat = to_chat_dicts(HISTORY, native_tools=True)
    assert chat[1]["tool_calls"] == [
        {"type": "function", "id": "c1", "function": {"name": "add", "arguments": {"a": 1, "b": 2}}}
    ]
    assert chat[2] == {"role": "tool", "content": "3", "tool_call_id": "c1", "name": "add"}


def prompt_of(runnable, text) -> str:
    handler = RunIds()
    runnable.invoke(text, {"callbacks": [handler]})
    record = token_records.pop(handler.ids[-1])
    return tiny_tokenizer().decode(record.prompt_ids)


def test_the_fallback_prompt_lists_the_tools_and_none_hides_them(policy):
    llm = ChatPolicy(model="tiny", max_tokens=1, temperature=0)
    shown = prompt_of(llm.bind_tools([get_weather]), "hi")
    assert '{"name": "get_weather", "arguments": {"city": <string>, "days": <integer>}}' in shown
    assert "otherwise answer in plain text" in shown
    assert "get_weather" not in prompt_of(llm.bind_tools([get_weather], tool_choice="none"), "hi")


# ---- calls from the model ---------------------------------------------------------------------------


def test_a_forced_call_is_a_schema_valid_call_of_that_tool_and_recorded(policy):
    llm = ChatPolicy(model="tiny", max_tokens=64, temperature=1.0)
    handler = RunIds()
    for seed in range(3):
        reply = llm.bind_tools([get_weather, add], tool_choice="add").invoke(
            "add 1 and 2", {"callbacks": [handler]}, seed=seed
        )
        (call,) = reply.tool_calls
        assert call["name"] == "add" and set(call["args"]) == {"a", "b"}
        assert all(isinstance(v, int) for v in call["args"].values())
        assert reply.content == "" and not reply.invalid_tool_calls
        record = token_records.pop(handler.ids[-1])
        assert record is not None and record.extra["constraint"] == "json_schema"
        assert json.loads(record.text) == {"name": "add", "arguments": call["args"]}
    # a get_weather call's string argument can run past 64 tokens: near the cap the grammar closes it
    any_tool = llm.bind_tools([get_weather, add], tool_choice="any")
    for seed in range(5, 9):
        (call,) = any_tool.invoke("weather?", seed=seed).tool_calls
        assert call["name"] in ("add", "get_weather")


def test_streaming_gives_tool_call_chunks_that_add_up_to_the_invoked_call(policy):
    llm = ChatPolicy(model="tiny", max_tokens=64, temperature=1.0, seed=4).bind_tools(
        [add], tool_choice="any"
    )
    invoked = llm.invoke("add")
    chunks = list(llm.stream("add"))
    assert any(chunk.tool_call_chunks for chunk in chunks)
    full = chunks[0]
    for chunk in chunks[1:]:
        full += chunk
    assert [(c["name"], c["args"]) for c in full.tool_calls] == [
        (c["name"], c["args"]) for c in invoked.tool_calls
    ]


async def test_async_forced_calls_in_one_batch(policy):
    llm = ChatPolicy(model="tiny", max_tokens=64, temperature=1.0).bind_tools([add], tool_choice="add")
    replies = await llm.abatch([f"add {i}" for i in range(4)])
    assert all(r.tool_calls and r.tool_calls[0]["name"] == "add" for r in replies)


def test_a_model_with_a_tool_template_gets_tools_through_it_and_tagged_calls():
    tokenizer = copy.deepcopy(tiny_tokenizer())
    tokenizer.chat_template = HERMES_TEMPLATE
    engine = SharedPolicy("tiny-tools", tiny_model(), tokenizer, max_wait_ms=5)
    SharedPolicy.register(engine)
    assert engine.has_tool_template
    llm = ChatPolicy(model="tiny-tools", max_tokens=128, temperature=1.0, seed=2).bind_tools(
        [add], tool_choice="add"
    )
    handler = RunIds()
    reply = llm.invoke([*HISTORY[:3], HumanMessage("and 3 + 4?")], {"callbacks": [handler]})
    assert reply.tool_calls[0]["name"] == "add"
    record = token_records.pop(handler.ids[0])
    assert (
        record is not None and record.text.startswith("<tool_call>") and record.text.endswith("</tool_call>")
    )
    prompt = engine.tokenizer.decode(record.prompt_ids)
    assert 'Tools: [{"type": "function", "function": {"name": "add"' in prompt
    assert '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>' in prompt
    assert "<|im_start|>tool\n3<|im_end|>" in prompt
    assert "You can call these tools" not in prompt


def test_bad_tool_choice_fails_at_bind_time(policy):
    with pytest.raises(ValueError, match="not one of"):
        ChatPolicy(model="tiny").bind_tools([add], tool_choice="divide")


# ---- structured output ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output_is_valid_on_every_call(policy, method):
    llm = ChatPolicy(model="tiny", max_tokens=160, temperature=1.0)
    structured = llm.with_structured_output(Verdict, method=method)
    for seed in range(3):
        assert isinstance(structured.invoke("judge", seed=seed), Verdict)


def test_json_mode_is_constrained_to_an_object_then_validated(policy):
    llm = ChatPolicy(model="tiny", max_tokens=80, temperature=0)
    schema = {"title": "Anything", "type": "object", "properties": {}}
    raw = llm.with_structured_output(schema, method="json_mode", include_raw=True).invoke("x")
    assert raw["raw"].content.startswith("{")
    assert isinstance(raw["parsed"], dict) or isinstance(raw["parsing_error"], OutputParserException)


def test_unknown_method_is_refused(policy):
    with pytest.raises(ValueError, match="unknown method 'xml'"):
        ChatPolicy(model="tiny").with_structured_output(Verdict, method="xml")


def test_a_tool_whose_schema_has_definitions_is_constrained_with_them(policy):
    parameters = {
        "type": "object",
        "properties": {"size": {"$ref": "#/$defs/Size"}},
        "required": ["size"],
        "$defs": {"Size": {"enum": ["small", "large"]}},
    }
    pick = {
        "type": "function",
        "function": {"name": "pick", "description": "Pick a size.", "parameters": parameters},
    }
    reply = (
        ChatPolicy(model="tiny", max_tokens=64, temperature=1.0, seed=1)
        .bind_tools([pick], tool_choice="pick")
        .invoke("x")
    )
    assert reply.tool_calls[0]["args"]["size"] in ("small", "large")


def test_a_rollout_counts_the_calls_offered_tools_and_the_tool_calls_made(policy):
    from langgraph.graph import END, START, MessagesState, StateGraph

    from langgraph_omar.rollout import run_episodes

    def graph(tool_choice):
        llm = ChatPolicy(model="tiny", max_tokens=64, temperature=1.0).bind_tools(
            [get_weather, add], tool_choice=tool_choice
        )

        def talk(state: MessagesState):
            return {"messages": [llm.invoke(state["messages"])]}

        builder = StateGraph(MessagesState)
        builder.add_node("talk", talk)
        builder.add_edge(START, "talk")
        builder.add_edge("talk", END)
        return builder.compile()

    inputs = [{"messages": [("user", "add 1 and 2")]}] * 2
    seeds = [{"sampling_seed": seed} for seed in range(2)]  # the draws of each episode are fixed
    episodes, forced = run_episodes(graph("add"), inputs, seeds, progress=False)
    assert (forced.tool_offers, forced.tool_calls, forced.tool_note()) == (2, 2, None)
    assert episodes[0].turns[0].metadata["tools"] == ["get_weather", "add"]
    assert episodes[0].turns[0].metadata["tool_calls"][0]["name"] == "add"
    _, free = run_episodes(graph("none"), inputs, seeds, progress=False)
    assert (free.tool_offers, free.tool_calls) == (2, 0)
    assert free.tool_note().startswith("0 tool calls in 2 episodes, though 2 model calls were offered tools")
