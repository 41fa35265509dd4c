"""Registered environments served by `langgraph dev` / LangGraph Studio (`langgraph.json`, `graphs/served.py`).

Settings come from environment variables, and each run may override them through its configurable:
    OMAR_MODEL        base model (default: the embedded default); "tiny" serves a tiny random test model
    OMAR_ADAPTER      LoRA adapter directory (or loaded name) served by default; none: the base model
    OMAR_TEMPERATURE  sampling temperature (default 0.7)
    OMAR_MAX_TOKENS   the most new tokens per call (default 64)
    OMAR_ALLOWED_MODELS, OMAR_ALLOWED_ADAPTERS
                      comma-separated models / adapters a run's configurable may name (default: OMAR_MODEL
                      and OMAR_ADAPTER only; "*" allows any). A client must not make the server load (and keep
                      loaded) whatever local folder it names.
    POST /runs/wait {"assistant_id": "negotiation", "input": {...},
                     "config": {"configurable": {"adapter": "runs/neg/adapter", "temperature": 0.3}}}
A graph factory builds its graph per request (cheap: `ChatPolicy` is lazy and the engine is shared); the
model and adapter load once, in a worker thread, so the server's event loop never blocks on disk.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig

from langgraph_omar.chat_model import ChatPolicy
from langgraph_omar.envs.registry import load_environment
from langgraph_omar.errors import OmarError
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.serving.settings import DEFAULT_MODEL, MAX_TOKENS, TEMPERATURE

TINY_MODEL = "tiny"
_tiny_lock = threading.Lock()
_tiny_ready = False


@dataclass(frozen=True)
class ServingSettings:
    """One dev-server run's settings, read from its configurable keys and OMAR_* variables; the defaults are
    serving/settings.py's."""

    model: str = DEFAULT_MODEL
    adapter: str | None = None
    temperature: float = TEMPERATURE
    max_tokens: int = MAX_TOKENS


def _number(name: str, text: Any, kind: type) -> Any:
    try:
        return kind(text)
    except (TypeError, ValueError):
        raise OmarError(f"{name}: expected {kind.__name__}, got {text!r}") from None


def serving_settings(
    config: RunnableConfig | None = None, environ: Mapping[str, str] | None = None
) -> ServingSettings:
    """The settings of one run: its configurable keys over the OMAR_* environment variables."""
    env = os.environ if environ is None else environ
    configurable = dict((config or {}).get("configurable") or {})

    def pick(key: str, variable: str) -> tuple[str, Any]:
        if configurable.get(key) is not None:
            return f"configurable {key!r}", configurable[key]
        return variable, env.get(variable)

    defaults = ServingSettings()
    model_where, model = pick("model", "OMAR_MODEL")
    adapter_where, adapter = pick("adapter", "OMAR_ADAPTER")
    if model_where != "OMAR_MODEL":
        _check_allowed(
            model_where, model, "OMAR_ALLOWED_MODELS", env.get("OMAR_MODEL") or defaults.model, env
        )
    if adapter_where != "OMAR_ADAPTER":
        _check_allowed(adapter_where, adapter, "OMAR_ALLOWED_ADAPTERS", env.get("OMAR_ADAPTER"), env)
    t_where, temperature = pick("temperature", "OMAR_TEMPERATURE")
    m_where, max_tokens = pick("max_tokens", "OMAR_MAX_TOKENS")
    settings = ServingSettings(
        model=str(model) if model else defaults.model,
        adapter=str(adapter) if adapter else None,
        temperature=_number(t_where, temperature, float) if temperature is not None else defaults.temperature,
        max_tokens=_number(m_where, max_tokens, int) if max_tokens is not None else defaults.max_tokens,
    )
    if not 0 <= settings.temperature < math.inf:  # NaN fails every comparison: refused too
        raise OmarError(f"{t_where}: temperature must be a finite number >= 0, got {settings.temperature}")
    if settings.max_tokens < 1:
        raise OmarError(f"{m_where}: max_tokens must be >= 1, got {settings.max_tokens}")
    return settings


def _check_allowed(
    where: str, value: Any, variable: str, default: str | None, env: Mapping[str, str]
) -> None:
    """An OmarError unless `value` (a model or adapter a run's configurable names) is in the server's
    allow-list: `variable` (comma-separated; "*" allows any), else just `default`. An entry matches the same
    string or a path to the same place."""
    listed = env.get(variable)
    allowed = [e.strip() for e in listed.split(",") if e.strip()] if listed is not None else [default]
    if "*" in allowed or any(entry is not None and _same(str(value), entry) for entry in allowed):
        return
    raise OmarError(f"{where}: {value!r} is not allowed by this server (its {variable} does not list it)")


def _same(value: str, entry: str) -> bool:
    return value == entry or Path(value).expanduser().resolve() == Path(entry).expanduser().resolve()


def _register_tiny() -> None:
    """A tiny random model under TINY_MODEL (once per process), with room for long prompts."""
    global _tiny_ready
    with _tiny_lock:
        if not _tiny_ready:
            from langgraph_omar.testing import tiny_model, tiny_tokenizer

            SharedPolicy.register(SharedPolicy(TINY_MODEL, tiny_model(0, context=4096), tiny_tokenizer()))
            _tiny_ready = True


def serving_chat_model(settings: ServingSettings) -> ChatPolicy:
    """A ChatPolicy for `settings`, its engine and adapter loaded now (blocking: call it from a thread)."""
    if settings.model == TINY_MODEL:
        _register_tiny()
    engine = SharedPolicy.get(settings.model)
    adapter = engine.ensure_adapter(settings.adapter) if settings.adapter else None
    # the loaded adapter's name, not its path: later calls then touch no file
    return ChatPolicy(
        model=settings.model,
        adapter=adapter,
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
    )


async def served_graph(config: RunnableConfig | None, build: Callable[[ChatPolicy], Any]) -> Any:
    """`build(chat_model)` for this run's settings, in a worker thread (model loading and graph building read
    files; the server's event loop must not block)."""
    settings = serving_settings(config)
    return await asyncio.to_thread(lambda: build(serving_chat_model(settings)))


def served_environment(name: str) -> Callable[[RunnableConfig], Any]:
    """The graph factory `langgraph.json` names for environment `name`: every role on the served model, a
    judge (if the game has one) on the base model."""

    def build(model: ChatPolicy) -> Any:
        environment = load_environment(name)
        judge = ChatPolicy(model=model.model_name, temperature=0.0, max_tokens=model.max_tokens)
        return environment.build_graph(model, judge=judge)

    async def graph(config: RunnableConfig) -> Any:
        return await served_graph(config, build)

    graph.__name__ = graph.__qualname__ = name
    return graph
