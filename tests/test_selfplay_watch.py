"""Runs you can watch: experiment trackers carry metrics.jsonl, a progress bar over the update, one console
line per iteration."""

from __future__ import annotations

import json

import pytest
from selfplay_toy import toy_config, toy_env, toy_policy

from langgraph_omar.errors import OmarError
from langgraph_omar.rl import selfplay
from langgraph_omar.rl.selfplay import experiment_trackers, run_selfplay, summary_line


def small_config(iterations: int, **selfplay_settings):
    return toy_config(
        0,
        iterations,
        selfplay={"episodes_per_iteration": 8, "max_concurrency": 8, **selfplay_settings},
        update={"micro_batch_size": 4, "epochs": 1},
    )


def test_tensorboard_event_files_in_the_run_folder_carry_the_metrics_of_metrics_jsonl(tmp_path):
    """Needs the `tensorboard` extra, which `make setup` installs."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    run_selfplay(
        small_config(2, log_with=["tensorboard"]), run, toy_env(), policy=toy_policy(), progress=False
    )
    folder = run / "logs" / selfplay.TRACKER_PROJECT
    assert list(folder.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(folder))
    events.Reload()
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    numeric = {k for k, v in lines[0].items() if isinstance(v, (int, float)) and k != "iteration"}
    assert numeric <= set(events.Tags()["scalars"])
    for name in ("reward_mean", "grad_norm", "num_processes", "degenerate_fraction"):
        logged = [(e.step, e.value) for e in events.Scalars(name)]
        assert logged == [(m["iteration"], pytest.approx(m[name])) for m in lines], name


def test_a_run_resumes_with_other_trackers(tmp_path):
    run = tmp_path / "run"
    run_selfplay(small_config(1, log_with=[]), run, toy_env(), policy=toy_policy(), progress=False)
    resumed = run_selfplay(
        small_config(2, log_with=["tensorboard"]), run, toy_env(), policy=toy_policy(), progress=False
    )
    assert [r["iteration"] for r in resumed] == [1]
    assert list((run / "logs" / selfplay.TRACKER_PROJECT).glob("events.out.tfevents.*"))


def test_log_with_defaults_to_tensorboard_when_installed_and_fails_loud_on_a_missing_tracker(monkeypatch):
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: ["tensorboard"])
    assert experiment_trackers(None) == ["tensorboard"]
    assert experiment_trackers([]) == []
    with pytest.raises(OmarError, match=r"selfplay.log_with: wandb is not installed \(pip install wandb\)"):
        experiment_trackers(["wandb"])
    with pytest.raises(OmarError, match="unknown tracker 'tensorbord'"):
        experiment_trackers(["tensorbord"])
    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    assert experiment_trackers(None) == []


def test_a_run_shows_a_bar_over_the_update_and_one_summary_line_per_iteration(tmp_path, capsys):
    run_selfplay(
        small_config(2, log_with=[]), tmp_path / "run", toy_env(), policy=toy_policy(), progress=True
    )
    out, err = capsys.readouterr()
    assert "update: " in err and "micro-batch" in err  # the update's tqdm bar
    summaries = [line for line in out.splitlines() if line.startswith("iteration ")]
    assert [line.split(" | ")[0] for line in summaries] == ["iteration 1/2", "iteration 2/2"]
    assert not (tmp_path / "run" / "logs").exists()  # log_with: [] starts no tracker


def test_the_summary_line_names_rewards_per_role_rates_degenerate_share_kl_and_time():
    record = {
        "iteration": 4,
        "reward_mean": 0.1,
        "reward_buyer": 0.52,
        "reward_seller": -0.1,
        "env_agreement": 0.5625,
        "env_win_rate_village": 0.25,
        "env_draw": 0.0,
        "env_windows_open": 3.0,  # not a declared rate, though its name holds "win"
        "env_turns": 6.0,
        "degenerate_fraction": 0.25,
        "approx_kl": 0.0012,
        "rollout_seconds": 52.2,
        "update_seconds": 41.6,
        "num_processes": 2,
    }
    assert summary_line(record, 10, rates={"agreement", "win", "draw"}) == (
        "iteration 5/10 | reward buyer +0.520 seller -0.100 | agreement 0.56 | draw 0.00 | win_rate_village 0.25 | "
        "degenerate 0.25 | kl 0.0012 | rollout 52 s, update 42 s (2 process(es))"
    )
    assert "kl 0.0300" in summary_line(record | {"kl": 0.03}, 10)  # the KL to the base, when trained with it
