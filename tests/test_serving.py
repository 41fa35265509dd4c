from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from adapter_helpers import save_random_adapter
from langgraph.pregel import Pregel

from langgraph_omar.dev_server import TINY_MODEL, ServingSettings, serving_chat_model, serving_settings
from langgraph_omar.envs import negotiation
from langgraph_omar.errors import OmarError
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.testing import tiny_model

REPO = Path(__file__).resolve().parents[1]
LANGGRAPH_CLI = Path(sys.executable).parent / "langgraph"
HAS_SERVER = LANGGRAPH_CLI.exists() and importlib.util.find_spec("langgraph_api") is not None
needs_server = pytest.mark.skipif(
    not HAS_SERVER, reason='langgraph-cli[inmem] is not installed: pip install "langgraph-cli[inmem]"'
)


def _config_graphs() -> dict[str, str]:
    return dict(json.loads((REPO / "langgraph.json").read_text())["graphs"])


def _load_graph_module(spec: str) -> ModuleType:
    path = REPO / spec.split(":")[0]
    module_spec = importlib.util.spec_from_file_location(f"served_{path.stem}", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_settings_take_run_config_over_environment() -> None:
    env = {"OMAR_MODEL": "tiny", "OMAR_ADAPTER": "runs/a", "OMAR_MAX_TOKENS": "12"}
    env["OMAR_ALLOWED_ADAPTERS"] = "runs/a, runs/b"
    assert serving_settings(None, env) == ServingSettings("tiny", "runs/a", 0.7, 12)
    config: Any = {"configurable": {"adapter": "runs/b", "temperature": "0.2"}}
    assert serving_settings(config, env) == ServingSettings("tiny", "runs/b", 0.2, 12)
    assert serving_settings(None, {}).adapter is None
    with pytest.raises(OmarError, match="OMAR_MAX_TOKENS: expected int, got 'many'"):
        serving_settings(None, {"OMAR_MAX_TOKENS": "many"})


@pytest.mark.parametrize(
    ("configurable", "environ", "variable"),
    [
        ({"model": "/srv/other-model"}, {}, "OMAR_ALLOWED_MODELS"),
        ({"model": "/srv/other-model"}, {"OMAR_MODEL": "tiny"}, "OMAR_ALLOWED_MODELS"),
        ({"adapter": "/home/someone/adapter"}, {}, "OMAR_ALLOWED_ADAPTERS"),
        ({"adapter": "/srv/b"}, {"OMAR_ADAPTER": "/srv/a"}, "OMAR_ALLOWED_ADAPTERS"),
        ({"adapter": "/srv/c"}, {"OMAR_ALLOWED_ADAPTERS": "/srv/a,/srv/b"}, "OMAR_ALLOWED_ADAPTERS"),
    ],
)
def test_a_run_may_name_only_the_models_and_adapters_the_server_allows(
    configurable: dict[str, str], environ: dict[str, str], variable: str
) -> None:
    ((key, value),) = configurable.items()
    with pytest.raises(
        OmarError, match=f"configurable '{key}': '{value}' is not allowed by this server"
    ) as info:
        serving_settings({"configurable": configurable}, environ)
    assert variable in str(info.value)


def test_the_allowed_models_and_adapters_are_served(tmp_path: Path) -> None:
    assert (
        serving_settings({"configurable": {"adapter": "/srv/a/"}}, {"OMAR_ADAPTER": "/srv/a"}).adapter
        == "/srv/a/"
    )
    assert serving_settings({"configurable": {"model": "tiny"}}, {"OMAR_MODEL": "tiny"}).model == "tiny"
    listed = {"OMAR_ALLOWED_ADAPTERS": "/srv/a, /srv/b", "OMAR_ALLOWED_MODELS": "tiny,other"}
    assert (
        serving_settings({"configurable": {"adapter": "/srv/b", "model": "other"}}, listed).adapter
        == "/srv/b"
    )
    anything = {"OMAR_ALLOWED_ADAPTERS": "*"}
    assert serving_settings({"configurable": {"adapter": str(tmp_path)}}, anything).adapter == str(tmp_path)


def test_serving_chat_model_loads_the_adapter_once(tmp_path: Path) -> None:
    adapter = save_random_adapter(tiny_model(0), tmp_path / "served")
    chat = serving_chat_model(ServingSettings(TINY_MODEL, str(adapter), 0.0, 4))
    engine = SharedPolicy.get(TINY_MODEL)
    assert chat.adapter in engine.adapter_versions  # the loaded name, so calls touch no file
    assert chat.invoke("hello").response_metadata["adapter"] == chat.adapter


def test_langgraph_json_serves_every_registered_environment() -> None:
    from langgraph_omar.envs.registry import registered

    assert _config_graphs() == {name: f"./graphs/served.py:{name}" for name in registered()}


@pytest.mark.parametrize("name", sorted(_config_graphs()))
def test_every_listed_graph_factory_builds(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMAR_MODEL", TINY_MODEL)
    module_path, attribute = _config_graphs()[name].split(":")
    assert (REPO / module_path).is_file()
    factory = getattr(_load_graph_module(_config_graphs()[name]), attribute)
    graph = asyncio.run(factory({"configurable": {}}))
    assert isinstance(graph, Pregel)


@needs_server
def test_langgraph_validate_accepts_the_config() -> None:
    done = subprocess.run(
        [str(LANGGRAPH_CLI), "validate", "--config", "langgraph.json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LANGGRAPH_CLI_NO_ANALYTICS": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "valid" in done.stdout


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _request(url: str, body: dict[str, Any] | None = None, timeout: float = 60) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with _NO_PROXY.open(request, timeout=timeout) as response:
        return json.loads(response.read())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """`langgraph dev` on a free loopback port, serving the tiny model; stopped after the test.

    It runs in a temporary folder (its state folder lands there, not in the repository), on a copy of
    langgraph.json whose relative paths are made absolute (the server resolves them against its cwd).
    """
    config = json.loads((REPO / "langgraph.json").read_text())
    config["graphs"] = {name: str(REPO / spec) for name, spec in config["graphs"].items()}
    config["dependencies"] = [str(REPO)]
    (tmp_path / "langgraph.json").write_text(json.dumps(config))
    port = _free_port()
    env = {
        **os.environ,
        "OMAR_MODEL": TINY_MODEL,
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
        "LANGSMITH_TRACING": "false",
    }
    command = [str(LANGGRAPH_CLI), "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--config", "langgraph.json"]
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"langgraph dev exited ({process.returncode}): {(tmp_path / 'server.log').read_text()[-2000:]}"
                )
            try:
                _request(f"{url}/ok", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail("langgraph dev did not answer /ok within 120 s")
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server's own process group (start_new_session)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@needs_server
def test_langgraph_dev_runs_one_negotiation_episode(server: str) -> None:
    body = {
        "assistant_id": "negotiation",
        "input": negotiation.sample_input(3),
        "config": {"configurable": {"max_tokens": 4}},
    }
    final = _request(f"{server}/runs/wait", body, timeout=120)
    assert set(final["rewards"]) == {"buyer", "seller"}
    assert final["metrics"]["scenario_id"] == "price-3"
    assert final["transcript"] and {u["speaker"] for u in final["transcript"]} == {"buyer", "seller"}
