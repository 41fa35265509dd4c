from __future__ import annotations

from pathlib import Path

import pytest

from langgraph_omar.testing import tiny_policy

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def policy():
    """A fresh tiny engine, registered as model "tiny" for ChatPolicy(model="tiny"); float32 prefill, whose
    recorded log-probabilities the tests compare exactly (bf16 prefill: test_precision.py)."""
    return tiny_policy("tiny", max_wait_ms=5, prefill_dtype="float32")
