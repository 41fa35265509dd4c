"""The package's structure (docs/design.md §3): imports point one way, `rl` imports no environment, and no
module outside `envs/` names an environment."""

from __future__ import annotations

import ast
from pathlib import Path

from langgraph_omar.envs.registry import BUILTIN

PACKAGE = Path(__file__).resolve().parents[1] / "langgraph_omar"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The package modules `path` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [m for m in submodules if m in known] or [node.module]  # `from pkg import submodule`
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def test_no_import_cycle() -> None:
    known = modules()
    graph = {name: imports_of(path, set(known)) - {name} for name, path in known.items()}

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return [*trail, start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
        return None

    cycles = [c for name in graph if (c := cycle_from(name))]
    assert not cycles, cycles[0]


def test_rl_imports_no_environment() -> None:
    known = modules()
    for name, path in known.items():
        if name.startswith("langgraph_omar.rl"):
            envs = {m for m in imports_of(path, set(known)) if m.startswith("langgraph_omar.envs")}
            assert not envs, f"{name} imports {sorted(envs)}"


def test_no_environment_name_outside_envs() -> None:
    names = set(BUILTIN)
    for name, path in modules().items():
        if name.startswith("langgraph_omar.envs"):
            continue
        strings = {
            node.value
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        }
        assert not strings & names, f"{name} spells {sorted(strings & names)}"


def _constants(path: Path) -> set[str]:
    return {
        node.value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


METADATA_MODULE = "langgraph_omar.trajectory.metadata"
SETTINGS_MODULE = "langgraph_omar.serving.settings"


def test_episode_metadata_is_built_in_one_place():
    """No module outside the environments builds an episode's metadata dict by hand: `episode_metadata`
    does (issue 27), and the sampling seed's key is spelled there alone."""
    keys = {"sampling_seed", "scenario_id", "group_id", "baseline_key"}
    for name, path in modules().items():
        if name == METADATA_MODULE or name.startswith("langgraph_omar.envs"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Dict):
                spelled = {k.value for k in node.keys if isinstance(k, ast.Constant)} & keys
                assert not spelled, (
                    f"{name}:{node.lineno} builds episode metadata by hand ({sorted(spelled)})"
                )
        assert "sampling_seed" not in _constants(path), f"{name} spells 'sampling_seed'"


def test_sampling_settings_are_declared_once():
    """model, temperature, top_p, max_tokens and device are fields of serving/settings.py's dataclasses
    only; a settings class elsewhere inherits them (self-play restates two defaults, with their reason), and
    no command writes their flags by hand (issue 27)."""
    from langgraph_omar.eval.arena import EvalConfig
    from langgraph_omar.rl.config import SelfPlaySettings
    from langgraph_omar.serving.settings import DEFAULT_MODEL, SamplingSettings, ServingSettings

    assert issubclass(EvalConfig, ServingSettings) and issubclass(SelfPlaySettings, SamplingSettings)
    sampling = {"model", "temperature", "top_p", "max_tokens", "device"}
    restated = {
        ("langgraph_omar.rl.config", "SelfPlaySettings"): {"temperature", "max_tokens"},
        # the dev server's per-run values (configurable keys, OMAR_* variables), defaults from serving/settings.py
        ("langgraph_omar.dev_server", "ServingSettings"): {"model", "temperature", "max_tokens"},
    }
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            if name == SETTINGS_MODULE or not cls.name.endswith(("Settings", "Config")):
                continue
            fields = {
                s.target.id
                for s in cls.body
                if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
            }
            extra = (fields & sampling) - restated.get((name, cls.name), set())
            assert not extra, f"{name}.{cls.name} declares {sorted(extra)} again"
        if name != SETTINGS_MODULE:
            assert DEFAULT_MODEL not in _constants(path), f"{name} copies the default model's name"
    hand_written = {"--temperature", "--top-p", "--max-tokens", "--device"} & _constants(PACKAGE / "cli.py")
    assert not hand_written, f"cli.py writes {sorted(hand_written)} by hand"
