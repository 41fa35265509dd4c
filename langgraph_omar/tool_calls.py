"""Tool calls for `ChatPolicy`: how bound tools are shown to the model, what a call looks like, how calls are
read back from the output, and how earlier calls and their results are rendered into the next prompt.

Two ways to show tools, chosen per model:
- the model's own chat template, when it renders tool definitions (`SharedPolicy.has_tool_template`): tools go
  to `apply_chat_template(..., tools=...)`, an AI message's calls and a ToolMessage's result go in the
  template's own fields (`tool_calls`, role "tool"). A template that mentions `<tool_call>` (Hermes, Qwen,
  SmolLM3) gets its calls written inside those tags.
- otherwise (SmolLM2, the default, has none) a system message at the end of the prompt lists the tools, each
  with a filled-in template of its arguments, and asks for `{"name": ..., "arguments": {...}}`; earlier calls
  are rendered as that JSON in the assistant's turn, results as a user turn naming the tool.
Either way a call is the JSON object `{"name": <tool>, "arguments": {...}}` (Llama's "parameters" is read
too), optionally inside `<tool_call>` tags; several calls are several objects. When `tool_choice` forces a call
(`any`/`required` or a tool's name), the output is constrained to exactly one such object whose arguments match
the tool's schema, so it parses on every call (see `serving.constraints`).
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages.tool import InvalidToolCall, ToolCall, invalid_tool_call, tool_call

# message conversion lives in messages.py (no torch); still importable from here
from langgraph_omar.messages import call_text as call_text
from langgraph_omar.messages import to_chat_dicts as to_chat_dicts
from langgraph_omar.serving.constraints import Constraint

TAG_OPEN, TAG_CLOSE = "<tool_call>", "</tool_call>"
AUTO, REQUIRED, NONE = "auto", "required", "none"


def normalize_tool_choice(choice: Any, names: Sequence[str]) -> str:
    """LangChain's tool_choice values -> "auto", "required", "none" or a bound tool's name."""
    if choice is None or choice == AUTO:
        return AUTO
    if choice in ("any", REQUIRED, True):
        return REQUIRED
    if choice == NONE or choice is False:
        return NONE
    if isinstance(choice, dict):  # OpenAI's {"type": "function", "function": {"name": ...}}
        choice = (choice.get("function") or {}).get("name", choice.get("name"))
    if isinstance(choice, str) and choice in names:
        return choice
    raise ValueError(
        f"tool_choice {choice!r} is not one of 'auto', 'any', 'required', 'none' or a bound tool "
        f"({', '.join(names) or 'no tools bound'})"
    )


def json_template(schema: dict[str, Any]) -> str | None:
    """A filled-in template of an object schema, `{"a": <integer>, "b": <string>}`: small models follow one far
    better than the schema itself. None when the schema has no properties to show."""
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not properties:
        return None
    fields = []
    for key, spec in properties.items():
        spec = spec if isinstance(spec, dict) else {}
        kind = (
            " or ".join(json.dumps(v) for v in spec["enum"]) if "enum" in spec else spec.get("type", "value")
        )
        fields.append(f'"{key}": <{kind}>')
    return "{" + ", ".join(fields) + "}"


@dataclass(frozen=True)
class ToolSet:
    """The tools bound to one call: OpenAI-format definitions, the normalised tool_choice, and the format."""

    tools: tuple[dict[str, Any], ...]
    choice: str
    native: bool  # the chat template renders tools
    tagged: bool  # calls are written inside <tool_call> tags

    @property
    def names(self) -> list[str]:
        return [t["function"]["name"] for t in self.tools]

    @property
    def active(self) -> bool:
        return bool(self.tools) and self.choice != NONE

    @property
    def forced(self) -> bool:
        return self.active and self.choice != AUTO

    def template_tools(self) -> list[dict[str, Any]] | None:
        """What the chat template gets as `tools` (None: nothing, or the fallback prompt shows them)."""
        return list(self.tools) if self.native and self.active else None

    def instruction(self) -> str | None:
        """The fallback prompt's system message (None when the template shows the tools itself)."""
        if self.native or not self.active:
            return None
        lines = ["You can call these tools:"]
        for tool in self.tools:
            function = tool["function"]
            arguments = json_template(function.get("parameters") or {}) or "{}"
            description = function.get("description") or ""
            lines.append(
                f'- {function["name"]}: {description} Call: {{"name": "{function["name"]}", "arguments": {arguments}}}'
            )
        if self.choice == AUTO:
            lines.append(
                'To call a tool, answer with only one JSON object {"name": <tool name>, "arguments": {...}}; '
                "otherwise answer in plain text."
            )
        else:
            target = "a tool" if self.choice == REQUIRED else f"the tool {self.choice}"
            lines.append(
                f'Call {target} now: answer with only one JSON object {{"name": ..., "arguments": {{...}}}}.'
            )
        return "\n".join(lines)

    def constraint(self) -> Constraint | None:
        """For a forced call: exactly one call of an allowed tool, its arguments matching that tool's schema."""
        if not self.forced:
            return None
        allowed = [t for t in self.tools if self.choice == REQUIRED or t["function"]["name"] == self.choice]
        calls = [_call_schema(t["function"]) for t in allowed]
        definitions = {k: v for call in calls for k, v in call.pop("$defs", {}).items()}
        schema = calls[0] if len(calls) == 1 else {"anyOf": calls}
        if definitions:  # "#/$defs/..." references resolve from the root, where the call schema now is
            schema = {**schema, "$defs": definitions}
        if self.tagged:
            return Constraint.json_schema(schema, prefix=TAG_OPEN + "\n", suffix="\n" + TAG_CLOSE)
        return Constraint.json_schema(schema)


def _call_schema(function: dict[str, Any]) -> dict[str, Any]:
    """`{"name": <the tool>, "arguments": <its parameters>}`, the parameters' `$defs` lifted to the top."""
    parameters = dict(function.get("parameters") or {"type": "object", "properties": {}})
    definitions = parameters.pop("$defs", None)
    return {
        "type": "object",
        "properties": {"name": {"const": function["name"]}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
        **({"$defs": definitions} if definitions else {}),
    }


@dataclass(frozen=True)
class ParsedCalls:
    content: str  # the text outside the calls
    tool_calls: list[ToolCall]
    invalid_tool_calls: list[InvalidToolCall]


_TAGGED = re.compile(re.escape(TAG_OPEN) + r"(.*?)(?:" + re.escape(TAG_CLOSE) + r"|$)", re.DOTALL)


def parse_tool_calls(text: str, names: Sequence[str]) -> ParsedCalls:
    """The calls in `text` (tagged blocks, then bare `{"name": ...}` objects) and the text around them.

    A call of an unknown tool, with arguments that are not an object, or whose JSON does not parse (an
    unclosed tag, a cut-off object) is kept in `invalid_tool_calls` with the reason; nothing is dropped.
    """
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    spans: list[tuple[int, int]] = []
    for match in _TAGGED.finditer(text):
        spans.append(match.span())
        _read_call(match.group(1).strip(), names, calls, invalid)
    # strict=False: a raw control character (a tab, a newline) inside a string is a model's text, not an error
    decoder = json.JSONDecoder(strict=False)
    position = 0
    while (start := text.find("{", position)) >= 0:
        if any(a <= start < b for a, b in spans):
            position = start + 1
            continue
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            if re.match(r'\{\s*"name"\s*:', text[start:]):  # a call cut off before its end
                spans.append((start, len(text)))
                invalid.append(_invalid(None, text[start:], "the call's JSON is incomplete"))
                break
            position = start + 1
            continue
        if isinstance(value, dict) and "name" in value:
            spans.append((start, end))
            _read_call(value, names, calls, invalid)
        position = end
    content = text
    for a, b in sorted(spans, reverse=True):
        content = content[:a] + content[b:]
    content = content.rstrip() if spans else text  # no lstrip: `CallGate` may have streamed the start already
    return ParsedCalls(content if content.strip() else "", calls, invalid)


def _read_call(
    raw: str | dict[str, Any], names: Sequence[str], calls: list[ToolCall], invalid: list[InvalidToolCall]
) -> None:
    text = raw if isinstance(raw, str) else json.dumps(raw)
    try:
        value = json.loads(raw, strict=False) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        invalid.append(_invalid(None, text, f"the call is not JSON: {exc.msg}"))
        return
    name = value.get("name") if isinstance(value, dict) else None
    arguments = value.get("arguments", value.get("parameters", {})) if isinstance(value, dict) else None
    if isinstance(arguments, str):  # some templates write the arguments as a JSON string
        with contextlib.suppress(json.JSONDecodeError):
            arguments = json.loads(arguments, strict=False)
    if not isinstance(name, str) or name not in names:
        invalid.append(_invalid(str(name), text, f"unknown tool {name!r}; bound: {list(names)}"))
    elif not isinstance(arguments, dict):
        invalid.append(_invalid(name, text, "the arguments are not a JSON object"))
    else:
        calls.append(tool_call(name=name, args=arguments, id=_new_id()))


def _invalid(name: str | None, args: str, error: str) -> InvalidToolCall:
    return invalid_tool_call(name=name, args=args, id=_new_id(), error=error)


def _new_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


class CallGate:
    """Streamed text deltas with possible calls held back: from the first `{` or `<` on, nothing more is let
    through (the end of the output decides what was a call), and trailing whitespace waits for what follows.
    What was let through (`passed` characters) is always a prefix of `parse_tool_calls(...).content`."""

    def __init__(self) -> None:
        self.holding = False
        self.pending = ""
        self.passed = 0

    def push(self, delta: str) -> str:
        if self.holding:
            return ""
        cut = min((i for i in (delta.find("{"), delta.find("<")) if i >= 0), default=-1)
        if cut >= 0:
            delta, self.holding = delta[:cut], True
        text = self.pending + delta
        release = len(text.rstrip())
        out, self.pending = text[:release], text[release:]
        self.passed += len(out)
        return out
