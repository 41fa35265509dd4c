"""`--judge-model` (issue 24 item 10): SOTOPIA's judge can be another local model (served by the same engine
machinery) or a LangChain chat model (`module:attribute`), for `omar train` and `omar eval`, and the run records
which."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from langchain_core.messages import BaseMessage

from langgraph_omar.chat_model import ChatPolicy
from langgraph_omar.cli import main
from langgraph_omar.conversation import ScriptedChatModel
from langgraph_omar.envs.judges import judge_chat_model
from langgraph_omar.envs.registry import load_environment
from langgraph_omar.errors import OmarError
from langgraph_omar.rollout import run_episodes
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.testing import tiny_model, tiny_tokenizer
from langgraph_omar.trajectory import read_episodes

SCORES = {"believability": 8, "relationship": 1, "knowledge": 3, "secret": 0, "social_rules": 0,
          "financial_and_material_benefits": 0, "goal": 3}  # fmt: skip
LONG, CONTEXT = "tiny-long", 4096
SCRIPTED_JUDGE = ScriptedChatModel(respond=lambda messages: json.dumps(SCORES))


def counting_judge() -> ScriptedChatModel:
    """A judge factory: its k-th answer scores goal k mod 11, so episodes differ (and a run trains)."""
    counter = itertools.count()

    def respond(messages: list[BaseMessage]) -> str:
        return json.dumps({**SCORES, "goal": next(counter) % 11})

    return ScriptedChatModel(respond=respond)


@pytest.fixture
def long_policy() -> SharedPolicy:
    """A tiny engine with room for SOTOPIA's long prompts (the default tiny model has 512 positions)."""
    policy = SharedPolicy(LONG, tiny_model(0, context=CONTEXT), tiny_tokenizer(), max_wait_ms=5)
    SharedPolicy.register(policy)
    return policy


def leaving_players() -> ScriptedChatModel:
    return ScriptedChatModel(respond=lambda messages: "[leave]")


def test_a_langchain_chat_model_named_module_attribute_judges_instead_of_the_served_one():
    SCRIPTED_JUDGE.calls.clear()
    served = ScriptedChatModel(respond=lambda messages: "no scores from me")  # what the command passes
    env = load_environment("sotopia", {"judge_model": "test_judge_model:SCRIPTED_JUDGE", "max_turns": 2})
    final = env.build_graph(leaving_players(), judge=served).invoke(env.sample_input(0))
    assert final["rewards"] == {"agent_1": 0.3, "agent_2": 0.3}  # goal 3 / 10
    assert len(SCRIPTED_JUDGE.calls) == 2 and not served.calls
    # a factory (a class, a function) is called once for the model
    factory = load_environment("sotopia", {"judge_model": "test_judge_model:counting_judge"})
    scored = factory.build_graph(leaving_players(), judge=served).invoke(factory.sample_input(0))
    assert sorted(scored["rewards"].values()) == [0.0, 0.1]


def test_a_local_model_directory_judges_through_the_engine_with_the_served_judges_settings(
    long_policy, tmp_path
):
    folder = tmp_path / "judge-model"
    tiny_model(seed=3, context=CONTEXT).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    served = ChatPolicy(model=LONG, device="cpu", temperature=0.0, max_tokens=77, adapter="whatever")
    judge = judge_chat_model(str(folder), served)
    assert isinstance(judge, ChatPolicy)
    assert (judge.model_name, judge.device, judge.temperature, judge.max_tokens, judge.adapter) == (
        str(folder),
        "cpu",
        0.0,
        77,
        None,
    )
    assert judge.engine.model_name == str(folder)  # loaded from the folder by the engine machinery

    env = load_environment("sotopia", {"judge_model": str(folder), "max_turns": 2})
    players = ChatPolicy(model=LONG, device="cpu", max_tokens=8)
    graph = env.build_graph(players, judge=ChatPolicy(model=LONG, device="cpu", temperature=0.0))
    episodes, _ = run_episodes(graph, [env.sample_input(0)], [{"episode_id": "e0"}], progress=False)
    judged = [t for t in episodes[0].turns if t.role == "judge"]
    assert judged and {t.model for t in judged} == {str(folder)}
    assert {t.model for t in episodes[0].turns if t.role != "judge"} == {LONG}


def test_a_judge_model_that_does_not_load_is_one_line(long_policy, tmp_path):
    cases = {
        str(tmp_path / "missing"): "unknown model",
        "test_judge_model:nothing_here": "has no attribute 'nothing_here'",
        "test_judge_model:SCORES": "dict is not a LangChain chat model",
        "no_such_module_here:judge": "cannot import 'no_such_module_here'",
    }
    for spec, message in cases.items():
        env = load_environment("sotopia", {"judge_model": spec})
        with pytest.raises(OmarError, match=message) as error:
            env.build_graph(leaving_players(), judge=ChatPolicy(model=LONG, device="cpu"))
        assert "\n" not in str(error.value)
    with pytest.raises(OmarError, match="judge_model must name a model"):
        load_environment("sotopia", {"judge_model": " "})


TRAIN = ["--model", LONG, "--iterations", "1", "--episodes-per-iteration", "2", "--group-size", "2"]
TRAIN += ["--max-turns", "2", "--selfplay.max-tokens", "4", "--micro-batch-size", "4", "--no-progress"]
TRAIN += ["--no-degenerate.over-length", "--no-degenerate.off-format", "--no-degenerate.repeated"]


def test_omar_train_and_eval_take_judge_model_and_record_it(long_policy, tmp_path: Path, capsys: Any):
    spec = "test_judge_model:counting_judge"
    run = tmp_path / "run"
    assert main(["train", "sotopia", "--judge-model", spec, "--out", str(run), *TRAIN]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["env"]["options"]["judge_model"] == spec
    episodes = read_episodes(run / "trajectories.jsonl")
    judged = [t for e in episodes for t in e.turns if t.role == "judge"]
    assert all(t.source == "model" for t in judged)  # the scripted judge, not the served tiny model

    out = tmp_path / "eval"
    argv = ["eval", "sotopia", "--adapter", str(run / "adapter"), "--episodes", "1", "--model", LONG]
    argv += ["--max-tokens", "4", "--max-turns", "2", "--judge-model", spec, "--out", str(out)]
    assert main(argv) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["config"]["env_options"]["judge_model"] == spec
    assert spec in (out / "report.html").read_text()  # the report says who judged
