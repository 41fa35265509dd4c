"""One adapter-fits-the-model check for every loader: the engine (ChatPolicy, `omar eval`, the dev server)
refuses an adapter made for another shape with one line, as `omar export` does, and keeps serving."""

from __future__ import annotations

from pathlib import Path

import pytest
from adapter_helpers import save_random_adapter

from langgraph_omar.chat_model import ChatPolicy
from langgraph_omar.cli import main
from langgraph_omar.errors import OmarError
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.testing import tiny_model, tiny_tokenizer

PROMPT = "How much for the bike?"


@pytest.fixture
def engine() -> SharedPolicy:
    policy = SharedPolicy("tiny-fit", tiny_model(0), tiny_tokenizer(), max_wait_ms=5)
    SharedPolicy.register(policy)
    return policy


def greedy(adapter: str | None = None) -> str:
    return ChatPolicy(model="tiny-fit", adapter=adapter, temperature=0.0, max_tokens=6).invoke(PROMPT).text


@pytest.mark.parametrize(
    ("shape", "problem"),
    [({"layers": 3}, "no place in the model"), ({"hidden_size": 64}, "does not fit model")],
    ids=["deeper", "wider"],
)
@pytest.mark.parametrize("first", [True, False], ids=["first-adapter", "after-another"])
def test_the_engine_refuses_an_adapter_for_another_shape_and_keeps_serving(
    engine: SharedPolicy, tmp_path: Path, shape: dict[str, int], problem: str, first: bool
) -> None:
    plain = greedy()
    good = save_random_adapter(tiny_model(0), tmp_path / "good")
    if not first:
        engine.load_adapter(good, name="good")
    misfit = save_random_adapter(tiny_model(0, **shape), tmp_path / "misfit")
    with pytest.raises(OmarError, match=problem) as info:
        engine.load_adapter(misfit, name="misfit")
    assert "\n" not in str(info.value) and "misfit" not in engine.adapter_versions
    assert greedy() == plain  # the base model is as it was
    engine.load_adapter(good, name="good")
    assert greedy("good") != plain  # and a fitting adapter still loads and serves


@pytest.mark.parametrize("shape", [{"layers": 3}, {"hidden_size": 64}], ids=["deeper", "wider"])
@pytest.mark.parametrize("others", [0, 1], ids=["alone", "beside-another"])
def test_a_misfit_reload_drops_that_name_and_the_rest_keeps_serving(
    engine: SharedPolicy, tmp_path: Path, others: int, shape: dict[str, int]
) -> None:
    plain = greedy()
    engine.load_adapter(save_random_adapter(tiny_model(0), tmp_path / "a"), name="a")
    kept = {}
    for i in range(others):
        engine.load_adapter(save_random_adapter(tiny_model(0), tmp_path / f"o{i}", seed=5 + i), name=f"o{i}")
        kept[f"o{i}"] = greedy(f"o{i}")
    misfit = save_random_adapter(tiny_model(0, **shape), tmp_path / "misfit")
    with pytest.raises(OmarError, match="does not fit model"):
        engine.load_adapter(misfit, name="a")  # a reload: the old weights of "a" are gone with it
    assert sorted(engine.adapter_versions) == sorted(kept)
    assert greedy() == plain and all(greedy(name) == text for name, text in kept.items())


def test_omar_eval_refuses_an_adapter_for_a_deeper_model(
    engine: SharedPolicy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deep = save_random_adapter(tiny_model(0, layers=3), tmp_path / "deep")
    argv = ["eval", "negotiation", "--adapter", str(deep), "--episodes", "1", "--model", "tiny-fit"]
    assert main([*argv, "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith(f"omar eval: error: adapter {deep} does not fit model 'tiny-fit'") and "\n" not in err
    )
    assert "no place in the model" in err and not (tmp_path / "eval").exists()
