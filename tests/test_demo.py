"""The main job's whole loop (self-play, export, training, swap, evaluation, report) on a tiny model."""

from __future__ import annotations

import json

from langgraph_omar.cli import build_parser
from langgraph_omar.demo import ENV_OPTIONS, demo_config, run_demo
from langgraph_omar.trajectory import read_episodes


def test_demo_writes_every_artefact(policy, tmp_path, capsys):
    artefacts = run_demo(tmp_path / "demo", episodes=2, model="tiny", eval_seeds=2, iterations=2)
    printed = capsys.readouterr().out
    assert "1/5 self-play" in printed and "5/5 report" in printed
    lines = printed.strip().splitlines()
    assert "tested - opponent:" in lines[-len(artefacts) - 2]  # the evaluation line, then the artefacts
    assert len(read_episodes(artefacts["trajectories"])) == 2
    assert (artefacts["run folder"] / "adapter" / "adapter_model.safetensors").exists()
    metrics = [
        json.loads(line) for line in (artefacts["run folder"] / "metrics.jsonl").read_text().splitlines()
    ]
    assert [m["iteration"] for m in metrics] == [0, 1]
    for name in ("report", "training plot", "seats plot"):
        assert name in artefacts and artefacts[name].exists()
    for name, path in artefacts.items():
        assert str(path) in printed, name  # the command says where each artefact is
    page = artefacts["report"].read_text()
    assert page.index('class="answer"') < page.index("learning curve") < page.index("before training")


def test_demo_flags_reach_the_training_config():
    args = build_parser().parse_args(
        ["demo", "--seed", "3", "--iterations", "2", "--advantage", "rae", "--behaviour-rewards", "0.5"]
    )
    assert (args.seed, args.iterations, args.advantage, args.behaviour_rewards) == (3, 2, "rae", 0.5)
    config = demo_config("tiny", 3, 2, {**ENV_OPTIONS, "behaviour_rewards": 0.5}, "rae")
    assert (config.advantage.mode, config.selfplay.iterations, config.selfplay.seed, config.update.seed) == (
        "rae",
        2,
        30_000,
        3,
    )
    assert config.env.options == {**ENV_OPTIONS, "behaviour_rewards": 0.5}
    assert demo_config("tiny", 0).advantage.mode == "hierarchical"  # the recipe's, when not overridden
