"""The trace layer loads no model runtime: recording a hosted model's calls costs no torch (issue 27)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import langgraph_omar


def modules_after(statement: str) -> set[str]:
    """The modules loaded by a fresh interpreter after `statement`."""
    code = f"import sys\n{statement}\nprint('\\n'.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


@pytest.mark.parametrize(
    "statement",
    [
        "import langgraph_omar.tracing",
        "from langgraph_omar import TraceRecorder",
        "import langgraph_omar.conversation.calls",
        "import langgraph_omar.rl.config",
        "from langgraph_omar.messages import to_chat_dicts",
    ],
)
def test_the_trace_layer_and_the_config_import_no_torch(statement):
    loaded = modules_after(statement)
    heavy = sorted(loaded & {"torch", "transformers", "xgrammar", "peft", "langgraph_omar.serving.engine"})
    assert not heavy, f"{statement} loads {heavy}"


def test_the_package_names_load_on_use_and_are_listed():
    from langgraph_omar import ChatPolicy, SharedPolicy, TraceRecorder

    assert (ChatPolicy.__name__, SharedPolicy.__name__, TraceRecorder.__name__) == (
        "ChatPolicy",
        "SharedPolicy",
        "TraceRecorder",
    )
    assert set(langgraph_omar.__all__) <= set(dir(langgraph_omar))
    for name in langgraph_omar.__all__:
        assert getattr(langgraph_omar, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = langgraph_omar.nothing  # type: ignore[attr-defined]
