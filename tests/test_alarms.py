"""Reward-hacking alarms on synthetic metric histories, and early_stop ending a self-play run."""

from __future__ import annotations

import json
import math
import warnings
from typing import Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from selfplay_toy import sample_input, toy_config, toy_policy  # noqa: F401  (the scenarios of this module's graph)

from langgraph_omar.rl.alarms import RewardHackingWarning, policy_turn_metrics, watch_reward_hacking
from langgraph_omar.rl.checkpoint import latest_checkpoint
from langgraph_omar.rl.config import ConfigError, EarlyStopSettings, RunConfig
from langgraph_omar.trajectory import Episode, Turn


def replay(
    records: list[dict[str, Any]], settings: EarlyStopSettings
) -> tuple[list[dict[str, Any]], list[str]]:
    """Feed the records to the watcher one iteration at a time, as the loop does; (records, warnings)."""
    history: list[dict[str, Any]] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i, record in enumerate(records):
            record = {"iteration": i, **record}
            stopped = watch_reward_hacking(history, record, [], settings, "policy")
            history.append(record)
            if stopped:
                break
    assert all(issubclass(w.category, RewardHackingWarning) for w in caught)
    return history, [str(w.message) for w in caught]


def test_entropy_collapse_fires_after_the_reference_and_stops_after_patience():
    # reference = mean of the first 2 iterations' entropy = 2. Ratios: 1.0/2 = 0.5 (quiet), 0.4/2 = 0.2 and
    # 0.3/2 = 0.15 (< 0.25: fires, 1 then 2 in a row) -> patience 2 reached at iteration 4: the run stops.
    settings = EarlyStopSettings(stop_on_alarm=True, patience=2, reference_iterations=2)
    entropies = [2.2, 1.8, 1.0, 0.4, 0.3, 0.3]
    history, messages = replay([{"entropy": e} for e in entropies], settings)
    assert [r["alarm_entropy_collapse"] for r in history] == [0, 0, 0, 1, 2]
    assert history[-1]["early_stop"] == 1.0 and "early_stop" not in history[-2]
    assert sum("entropy collapse" in m for m in messages) == 2 and "the run ends here" in messages[-1]


def test_without_stop_on_alarm_alarms_only_warn_and_a_quiet_iteration_resets_the_count():
    # Length reference 10 (first iteration). 2 < 0.25 * 10 fires; 5 does not (count back to 0); 1 fires again.
    settings = EarlyStopSettings(patience=1, reference_iterations=1)
    lengths = [10.0, 2.0, 5.0, 1.0, 1.0]
    history, messages = replay([{"policy_turn_tokens": x} for x in lengths], settings)
    assert len(history) == 5 and not any("early_stop" in r for r in history)
    assert [r["alarm_length_collapse"] for r in history] == [0, 1, 0, 1, 2]
    assert len(messages) == 3 and all("length collapse" in m for m in messages)


def test_degenerate_share_and_judge_outcome_gap_fire_when_they_grow_past_their_reference():
    # Degenerate share reference 0.1: 0.3 is +0.2 (quiet, limit +0.25), 0.4 is +0.3 (fires).
    # Judge/outcome gap reference 0.05: 0.2 is +0.15 (quiet), 0.3 is +0.25 (fires, limit +0.2).
    settings = EarlyStopSettings(reference_iterations=1)
    records = [
        {"policy_degenerate_share": 0.1, "judge_outcome_gap": 0.05},
        {"policy_degenerate_share": 0.3, "judge_outcome_gap": 0.2},
        {"policy_degenerate_share": 0.4, "judge_outcome_gap": 0.3},
    ]
    history, _ = replay(records, settings)
    assert [r["alarm_degenerate_share"] for r in history] == [0, 0, 1]
    assert [r["alarm_judge_outcome_gap"] for r in history] == [0, 0, 1]
    off = EarlyStopSettings(reference_iterations=1, max_degenerate_increase=1.0, max_judge_gap_increase=None)
    history, messages = replay(records, off)
    assert history[-1]["alarm_degenerate_share"] == 0 and history[-1]["alarm_judge_outcome_gap"] == 0
    assert messages == []


def test_missing_metrics_and_an_unset_reference_never_fire():
    # The entropy reference needs 2 reporting iterations: iteration 1 (no entropy, no update) does not count,
    # so iteration 2's tiny entropy is still part of the reference and nothing fires.
    settings = EarlyStopSettings(stop_on_alarm=True, patience=1, reference_iterations=2)
    history, messages = replay([{"entropy": 2.0}, {}, {"entropy": 0.01}], settings)
    assert [r["alarm_entropy_collapse"] for r in history] == [0, 0, 0] and messages == []


def test_policy_turn_metrics_by_hand():
    def turn(
        role: str, ids: list[int], adapter: str | None = "policy", degenerate: str | None = None
    ) -> Turn:
        return Turn(role, role, "x", [1], ids, [0.0] * len(ids), adapter=adapter, degenerate=degenerate)

    # Policy turns: lengths 4, 0 (empty, degenerate), 2 -> mean 2, degenerate share 1/3. The base model's
    # turn (adapter None) and the failed episode's do not count.
    # Gap: role a played by the policy in both ok episodes: (0.9 - 0.5) and (0.6 - 0.6) -> mean 0.2; role b is
    # the base model's, role c carries no outcome.
    first = Episode(
        "1",
        [turn("a", [1, 2, 3, 4]), turn("b", [5], adapter=None), turn("c", [], degenerate="empty")],
        {"a": 0.5, "b": 0.1, "c": 0.0},
        reward_dimensions={"a": {"judge": 0.9, "outcome": 0.5}, "b": {"judge": 1.0, "outcome": 0.0}},
    )
    second = Episode("2", [turn("a", [1, 2])], {"a": 0.6}, {"a": {"judge": 0.6, "outcome": 0.6}})
    second.reward_dimensions["c"] = {"judge": 1.0}
    failed = Episode("3", [turn("a", [1] * 50)], {"a": 0.0}, status="failed")
    metrics = policy_turn_metrics([first, second, failed], "policy")
    assert metrics["policy_turn_tokens"] == pytest.approx(2.0)
    assert metrics["policy_degenerate_share"] == pytest.approx(1 / 3)
    assert metrics["judge_outcome_gap"] == pytest.approx(0.2)
    assert policy_turn_metrics([], "policy") == {}


def test_early_stop_settings_are_validated_and_off_by_default():
    assert RunConfig().early_stop.stop_on_alarm is False
    with pytest.raises(ConfigError, match="early_stop.patience must be >= 1"):
        RunConfig.from_dict({"early_stop": {"patience": 0}})
    with pytest.raises(ConfigError, match="early_stop.min_entropy_ratio must be in"):
        RunConfig.from_dict({"early_stop": {"min_entropy_ratio": 1.5}})


# ---- the loop ---------------------------------------------------------------------------------------------------


class JudgedState(TypedDict, total=False):
    prompt: str
    reply: str
    rewards: dict[str, float]
    reward_dimensions: dict[str, dict[str, float]]


def rising_judge_graph(model: Any) -> Any:
    """A one-role toy whose judge rates every episode 0.1 higher than the last while the outcome stays at 0:
    the judge/outcome gap grows with every episode."""
    counter = {"episodes": 0}

    async def speaker(state: JudgedState) -> dict[str, Any]:
        reply = await model.ainvoke(state["prompt"])
        counter["episodes"] += 1
        judge = 0.1 * counter["episodes"]
        return {
            "reply": reply.text,
            "rewards": {"speaker": 0.0},
            "reward_dimensions": {"speaker": {"judge": judge, "outcome": 0.0}},
        }

    graph = StateGraph(JudgedState)
    graph.add_node("speaker", speaker, metadata={"role": "speaker"})
    graph.add_edge(START, "speaker")
    graph.add_edge("speaker", END)
    return graph.compile()


def test_early_stop_ends_a_self_play_run_after_patience_iterations_of_an_alarm(tmp_path):
    from langgraph_omar.envs.registry import load_environment
    from langgraph_omar.rl.selfplay import run_selfplay

    # 2 episodes per iteration, one at a time: the gap is 0.15, 0.35, 0.55, 0.75. Reference 0.15 (iteration 0),
    # limit +0.3: iteration 1 (+0.2) is quiet, iteration 2 (+0.4) fires once, iteration 3 (+0.6) twice =
    # patience: the run ends after 4 of its 8 iterations, with a checkpoint although checkpoint_every is 3.
    config = toy_config(
        0,
        8,
        env={"name": "test_alarms:rising_judge_graph"},
        selfplay={"episodes_per_iteration": 2, "group_size": 2, "max_concurrency": 1, "checkpoint_every": 3},
        update={"micro_batch_size": 2},
        early_stop={
            "stop_on_alarm": True,
            "patience": 2,
            "reference_iterations": 1,
            "max_judge_gap_increase": 0.3,
        },
    )
    run = tmp_path / "run"
    environment = load_environment(config.env.name)
    with pytest.warns(RewardHackingWarning, match="the run ends here"):
        history = run_selfplay(config, run, environment, policy=toy_policy(), progress=False)
    assert [h["alarm_judge_outcome_gap"] for h in history] == [0, 0, 1, 2]
    assert history[-1]["early_stop"] == 1.0
    assert [h["judge_outcome_gap"] for h in history] == pytest.approx([0.15, 0.35, 0.55, 0.75])
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [0, 1, 2, 3] and lines[-1]["early_stop"] == 1.0
    checkpoint = latest_checkpoint(run)
    assert checkpoint is not None and checkpoint.name == "step-000004"  # saved on stopping
    assert (run / "adapter" / "adapter_model.safetensors").exists()
    assert not math.isnan(history[-1]["policy_turn_tokens"])
