"""One loop serves `omar train ENV` and `omar train --from FILE`: a run from files gets the experiment trackers,
the reward-hacking alarms, the console line and resume as a self-play run does (tests/test_selfplay_watch.py,
tests/test_alarms.py and tests/test_checkpoint.py hold the self-play side)."""

from __future__ import annotations

from pathlib import Path

import pytest

from langgraph_omar.rl.alarms import RewardHackingWarning
from langgraph_omar.rl.config import RunConfig
from langgraph_omar.rl.from_files import train_from_files
from langgraph_omar.rl.tracking import TRACKER_PROJECT
from langgraph_omar.rl.training_run import reward_means
from langgraph_omar.run_folder import RunFolder
from langgraph_omar.trajectory import Episode, Turn, write_episodes

GAPS = [0.15, 0.35, 0.55, 0.75, 0.95, 1.15]  # the judge rates the speaker ever further above its outcome


def judged_file(path: Path, gaps: list[float] = GAPS) -> Path:
    """One episode per gap: a speaker's hosted-model turn (text and messages), rewarded, with a judge score
    `gap` above the rule-based outcome 0."""
    episodes = [
        Episode(
            f"ep-{i}",
            [
                Turn(
                    "speaker",
                    "speaker",
                    f"offer {i}",
                    [],
                    [],
                    [],
                    source="model",
                    model="hosted",
                    messages=[{"role": "user", "content": "make an offer"}],
                )
            ],
            {"speaker": gap},
            reward_dimensions={"speaker": {"judge": gap, "outcome": 0.0}},
            metadata={"group_id": f"g{i}"},
        )
        for i, gap in enumerate(gaps)
    ]
    write_episodes(path, episodes)
    return path


def files_config(**sections) -> RunConfig:
    base = {
        "selfplay": {"model": "tiny", "episodes_per_iteration": 1, "group_size": 1, "log_with": []},
        "update": {"algo": "sft", "epochs": 1, "micro_batch_size": 2},
    }
    for name, values in sections.items():
        base[name] = base.get(name, {}) | values
    return RunConfig().with_overrides(
        {f"{s}.{k}": v for s, values in base.items() for k, v in values.items()}
    )


def test_a_run_from_files_logs_to_the_trackers_and_prints_the_console_line(policy, tmp_path, capsys):
    """Needs the `tensorboard` extra, which `make setup` installs."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    config = files_config(selfplay={"log_with": ["tensorboard"]})
    history = train_from_files(
        config, run, [judged_file(tmp_path / "f.jsonl")], policy=policy, progress=False
    )
    assert len(history) == len(GAPS)
    events = EventAccumulator(str(RunFolder(run).logs / TRACKER_PROJECT))
    events.Reload()
    lines = RunFolder(run).read_metrics()
    for name in ("reward_mean", "trained_turns", "judge_outcome_gap"):
        assert [(e.step, e.value) for e in events.Scalars(name)] == [
            (m["iteration"], pytest.approx(m[name])) for m in lines
        ], name
    out = capsys.readouterr().out
    summaries = [line for line in out.splitlines() if line.startswith("iteration ")]
    assert [line.split(" | ")[:2] for line in summaries[:2]] == [
        ["iteration 1/6", "reward speaker +0.150"],
        ["iteration 2/6", "reward speaker +0.350"],
    ]
    assert "rollout" not in summaries[0] and "update " in summaries[0]


def test_early_stop_ends_a_run_from_files_after_patience_iterations_of_an_alarm(policy, tmp_path):
    # as the self-play test: reference 0.15, limit +0.3, patience 2: the run ends after 4 of its 6 iterations
    config = files_config(
        early_stop={
            "stop_on_alarm": True,
            "patience": 2,
            "reference_iterations": 1,
            "max_judge_gap_increase": 0.3,
        },
        selfplay={"checkpoint_every": 3},
    )
    run = tmp_path / "run"
    with pytest.warns(RewardHackingWarning, match="the run ends here"):
        history = train_from_files(
            config, run, [judged_file(tmp_path / "f.jsonl")], policy=policy, progress=False
        )
    assert [h["alarm_judge_outcome_gap"] for h in history] == [0, 0, 1, 2]
    assert [h["judge_outcome_gap"] for h in history] == pytest.approx(GAPS[:4])
    assert history[-1]["early_stop"] == 1.0
    assert [r["iteration"] for r in RunFolder(run).read_metrics()] == [0, 1, 2, 3]
    assert (RunFolder(run).checkpoints / "step-000004").is_dir()  # saved on stopping


def test_a_killed_run_from_files_resumes_past_its_torn_metrics_line(policy, tmp_path):
    path = judged_file(tmp_path / "f.jsonl")
    run = tmp_path / "run"
    config = files_config(selfplay={"checkpoint_every": 2})
    train_from_files(config, run, [path], policy=policy, progress=False)
    folder = RunFolder(run)
    # as if killed after iteration 4's line was half-written, with the checkpoint of iteration 4 the newest
    lines = folder.metrics_file.read_text().splitlines()
    folder.metrics_file.write_text("\n".join(lines[:4]) + "\n" + lines[4][:10])
    (folder.checkpoints / "latest").write_text("step-000004\n")
    resumed = train_from_files(config, run, [path], policy=policy, progress=False)
    assert [r["iteration"] for r in resumed] == [4, 5]
    assert [r["iteration"] for r in folder.read_metrics()] == [0, 1, 2, 3, 4, 5]


def test_reward_means_are_over_the_ok_episodes_roles_the_policy_played():
    ok = Episode("a", [], {"buyer": 1.0, "seller": 0.0, "judge": 5.0})
    other = Episode("b", [], {"buyer": 0.0})
    failed = Episode("c", [], {"buyer": 9.0}, status="failed")
    means = reward_means([ok, other, failed], lambda e: {"buyer", "seller"})
    assert means == {"reward_mean": pytest.approx(1 / 3), "reward_buyer": 0.5, "reward_seller": 0.0}
    assert reward_means([failed], lambda e: {"buyer"}) == {}
