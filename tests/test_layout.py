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
