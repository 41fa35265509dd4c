"""LangChain messages -> the chat-template dicts a tokenizer renders (`to_chat_dicts`), and a tool call as the
text a model writes. Imports no torch: the recorder (tracing.py) uses it to store what a call was shown, for any
chat model, hosted ones included. Tool-call conventions: tool_calls.py's docstring.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, ToolMessage
from langchain_core.messages.tool import ToolCall

_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "user", "function": "user"}


def call_text(call: ToolCall) -> str:
    return json.dumps({"name": call["name"], "arguments": call["args"]}, ensure_ascii=False)


def to_chat_dicts(messages: Sequence[BaseMessage], native_tools: bool = False) -> list[dict[str, Any]]:
    """LangChain messages -> chat-template dicts. Any order and any number of system/human/AI/tool messages.

    A message's `name` (a speaker in a multi-party transcript) is kept as a "name: " prefix, since most chat
    templates have no field for it; a ChatMessage with a custom role is sent as a user turn the same way.
    native_tools: the template has tool fields (see the module docstring); else calls and results are text.
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        content = message.text if hasattr(message, "text") else str(message.content)
        if isinstance(message, ToolMessage):
            out.append(_tool_result(message, content, native_tools))
            continue
        role, speaker = _ROLES.get(message.type, "user"), message.name
        if isinstance(message, ChatMessage) and message.role not in ("system", "user", "assistant"):
            role, speaker = "user", message.name or message.role
        if speaker and role == "user":
            content = f"{speaker}: {content}"
        entry: dict[str, Any] = {"role": role, "content": content}
        if isinstance(message, AIMessage) and message.tool_calls:
            if native_tools:
                entry["tool_calls"] = [
                    {
                        "type": "function",
                        "id": c["id"],
                        "function": {"name": c["name"], "arguments": c["args"]},
                    }
                    for c in message.tool_calls
                ]
            else:
                entry["content"] = "\n".join([content, *map(call_text, message.tool_calls)]).strip()
        out.append(entry)
    return out


def _tool_result(message: ToolMessage, content: str, native: bool) -> dict[str, Any]:
    if native:
        return {
            "role": "tool",
            "content": content,
            "tool_call_id": message.tool_call_id,
            "name": message.name,
        }
    what = "failed" if message.status == "error" else "returned"
    return {"role": "user", "content": f"Tool {message.name or message.tool_call_id} {what}: {content}"}
