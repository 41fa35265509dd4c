"""`omar train --from FILE`: training an adapter from recorded episodes (sft, filtered-bc, ppo), with rewards
added after the fact; the traced graph has a hosted (fake) chat model in one role and ChatPolicy in the other."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from hosted_roles import BUYER_LINES, mixed_graph
from peft import PeftModel

from langgraph_omar.cli import main
from langgraph_omar.errors import OmarError
from langgraph_omar.rl.checkpoint import CheckpointError, load_adapter_weights
from langgraph_omar.rl.config import RunConfig
from langgraph_omar.rl.from_files import (
    bc_samples,
    check_roles,
    filter_groups,
    iteration_chunks,
    render_text_turn,
)
from langgraph_omar.rl.selfplay import behaviour_cloning_filter
from langgraph_omar.rl.trainer import PPOTrainer
from langgraph_omar.rollout import run_episodes
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.testing import tiny_model, tiny_tokenizer
from langgraph_omar.trajectory import Episode, Turn, read_episodes, write_episodes

FAST = ["--model", "tiny", "--no-progress", "--micro-batch-size", "8", "--gradient-accumulation-steps", "1"]


def traced_file(path: Path, rewards: dict[str, float] | None, episodes: int = 4, groups: bool = True) -> Path:
    """Episodes of the mixed graph in groups of two, exported as a production app would (`groups=False`: as
    `omar rollout` writes them, one scenario per episode and no group_id)."""
    metadata = [
        {"episode_id": f"ep-{i}", **({"group_id": f"g{i // 2}"} if groups else {"scenario_id": f"s-{i}"})}
        for i in range(episodes)
    ]
    # one at a time: each episode's buyer gets both of the fake model's lines, in turn (no repeats)
    graph = mixed_graph(rewards=rewards)
    ran, _ = run_episodes(graph, [{}] * episodes, metadata, max_concurrency=1, progress=False)
    write_episodes(path, ran)
    return path


def completion_logprob(model: torch.nn.Module, prompt: list[int], completion: list[int]) -> float:
    """Mean log-probability per token of `completion` after `prompt` under `model`."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1]
    return float(torch.log_softmax(logits.float(), -1).gather(-1, ids[0, len(prompt) :, None]).mean())


def test_sft_on_a_hosted_models_turns_makes_its_text_more_likely(policy, tmp_path, capsys):
    path = traced_file(tmp_path / "traces.jsonl", rewards={"seller": 0.0, "buyer": 1.0})
    recorded = [t for e in read_episodes(path) for t in e.turns if t.role == "buyer"]
    assert recorded and all(t.source == "model" and t.text in BUYER_LINES for t in recorded)
    run = tmp_path / "bc"
    argv = ["train", "--from", str(path), "--out", str(run), "--algo", "sft", "--roles", "buyer"]
    assert (
        main([*argv, *FAST, "--learning-rate", "0.01", "--epochs", "12", "--target-modules", "all-linear"])
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "trained 12 iteration(s), 12 epoch(s) over the file, 12 optimizer steps, 8 turns an epoch (sft; "
        "recorded: policy 0, model 8, human 0)"
    ) in out
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert record["bc_tokenized_turns"] == 8 and record["turns_model"] == 8 and "turns_policy" not in record
    assert "logprob_mismatch" not in record  # the tokenized turns have no sampling log-probabilities
    layout = {"adapter", "checkpoints", "config.yaml", "metrics.jsonl", "sources.json", "trajectories.jsonl"}
    assert layout <= {p.name for p in run.iterdir()}  # a self-play run's folder, plus sources.json

    base = tiny_model(0)
    tuned = PeftModel.from_pretrained(tiny_model(0), str(run / "adapter")).eval()
    gains = []
    for turn in recorded[:2]:
        prompt, completion = render_text_turn(policy, turn.messages, turn.text)
        gains.append(
            completion_logprob(tuned, prompt, completion) - completion_logprob(base, prompt, completion)
        )
    # The random tiny model is near uniform (about -6 nats per token over 384 tokens); 12 cloning steps gain
    # about 0.4 nats per token on the hosted model's texts (measured 0.35-0.44).
    assert min(gains) > 0.2, gains


def test_sft_from_a_file_defaults_to_three_epochs_over_it_at_a_lora_rate(policy, tmp_path, capsys):
    # no --epochs, no --learning-rate: TRL SFTTrainer's 3 epochs over the file at 5e-4, not one pass at 1e-4
    path = traced_file(tmp_path / "traces.jsonl", rewards=None, episodes=4)
    run = tmp_path / "sft"
    argv = ["train", "--from", str(path), "--out", str(run), "--algo", "sft", "--roles", "buyer", *FAST]
    assert main([*argv, "--episodes-per-iteration", "2", "--group-size", "1"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["trained_turns"]) for r in records] == [(e, 4) for e in (0, 0, 1, 1, 2, 2)]
    assert all(r["learning_rate"] == pytest.approx(5e-4) for r in records)
    assert (
        "trained 6 iteration(s), 3 epoch(s) over the file, 6 optimizer steps, 8 turns an epoch (sft; "
        "recorded: policy 0, model 8, human 0)"
    ) in capsys.readouterr().out
    saved = RunConfig.from_yaml(run / "config.yaml")
    assert (saved.update.epochs, saved.optimizer.learning_rate) == (3, 5e-4)
    assert len(read_episodes(run / "trajectories.jsonl")) == 4  # each episode written once, not per epoch


def test_unset_epochs_and_learning_rate_take_the_defaults_of_the_run():
    def values(config: RunConfig) -> tuple[int | None, float | None]:
        return config.update.epochs, config.optimizer.learning_rate

    assert values(RunConfig()) == (None, None)
    assert values(RunConfig().resolved()) == (1, 1e-4)  # a PPO iteration's (self-play, ppo from files)
    assert values(RunConfig().resolved(files_bc=True)) == (3, 5e-4)  # behaviour cloning from files
    chosen = RunConfig.from_dict({"update": {"epochs": 1}, "optimizer": {"learning_rate": 1e-4}})
    assert values(chosen.resolved(files_bc=True)) == (1, 1e-4)  # what a user sets is kept


def test_render_text_turn_is_the_chat_template_reply(policy):
    messages = [{"role": "system", "content": "You buy."}, {"role": "user", "content": "seller: hi"}]
    prompt, completion = render_text_turn(policy, messages, "OFFER 120.")
    assert prompt == policy.render(messages, len(completion))[0]
    assert completion[-1] == policy.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert policy.tokenizer.decode(completion) == "OFFER 120.<|im_end|>"


def test_a_file_without_rewards_is_refused_naming_it_unless_a_reward_function_labels_it(
    policy, tmp_path, capsys
):
    path = traced_file(tmp_path / "unlabelled.jsonl", rewards=None)
    capsys.readouterr()
    for algo in ("ppo", "filtered-bc"):
        argv = ["train", "--from", str(path), "--out", str(tmp_path / algo), "--algo", algo, *FAST]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert (
            err
            == f"omar train: error: {path}: no episode has rewards, which --algo {algo} needs; pass "
            + (
                "--reward module:function (a function of an Episode returning {role: float}) or label the file "
                "(langgraph_omar.trajectory.labels)\n"
            )
        )
    # --reward module:function labels every episode: the filter keeps the better episode of each group
    run = tmp_path / "labelled"
    argv = ["train", "--from", str(path), "--out", str(run), "--algo", "filtered-bc", "--top-fraction", "0.5"]
    argv += ["--reward", "hosted_roles:by_episode_number", "--no-degenerate.over-length"]
    assert main([*argv, *FAST]) == 0
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert record["bc_kept_turns"] == 8  # 2 groups x 1 episode x 4 turns (2 of each role)
    assert record["reward_seller"] == pytest.approx(1.5)  # the rewards of ep-0..3
    labelled = read_episodes(run / "trajectories.jsonl")
    assert [e.rewards["buyer"] for e in labelled] == [0.0, 1.0, 2.0, 3.0]
    assert json.loads((run / "sources.json").read_text())["reward"] == "hosted_roles:by_episode_number"
    # sft needs no rewards: behaviour cloning of every chosen turn
    argv = ["train", "--from", str(path), "--out", str(tmp_path / "sft"), "--algo", "sft", *FAST]
    assert main(argv) == 0


def test_filtered_bc_on_a_rollout_file_ranks_the_whole_iteration(policy, tmp_path, capsys):
    # no group_id and a scenario per episode: each episode alone would keep 1 of 1, so the filter would keep all
    path = traced_file(tmp_path / "rollout.jsonl", rewards=None, groups=False)
    run = tmp_path / "filtered"
    argv = ["train", "--from", str(path), "--out", str(run), "--algo", "filtered-bc", "--top-fraction", "0.5"]
    argv += ["--reward", "hosted_roles:by_episode_number", "--no-degenerate.over-length"]
    assert main([*argv, *FAST]) == 0
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert record["bc_kept_turns"] == 8  # the best 2 of the iteration's 4 episodes x 4 turns, not all 16


def test_filter_groups_are_group_ids_else_shared_scenarios_else_the_whole_iteration():
    metas = [
        {"group_id": "g", "scenario_id": "s"},
        {"group_id": "g"},
        {"scenario_id": "s"},
        {"scenario_id": "s"},
        {"scenario_id": "t"},  # its own scenario: ranked with the rest of the iteration
        {},
    ]
    episodes = [Episode(f"e{i}", metadata=m) for i, m in enumerate(metas)]
    assert filter_groups(episodes) == [
        "group:g",
        "group:g",
        "scenario:s",
        "scenario:s",
        "iteration",
        "iteration",
    ]


def test_ppo_trains_only_the_turns_the_policy_sampled(policy, tmp_path, capsys):
    path = traced_file(tmp_path / "traces.parquet", rewards={"seller": 1.0, "buyer": 0.0})
    run = tmp_path / "ppo"
    argv = ["train", "--from", str(path), "--out", str(run), "--algo", "ppo", "--advantage", "rae", *FAST]
    argv.append("--no-degenerate.over-length")  # the tiny model's turns all end at max_tokens
    argv += ["--mixed-precision", "no"]  # float32 as the engine sampled: the mismatch is then ~0
    assert main(argv) == 0
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert record["turns_policy"] == 8 and record["turns_model"] == 8
    assert record["trained_turns"] == 8  # the seller's: the hosted buyer's turns are never PPO data
    assert record["logprob_mismatch"] < 1e-4  # the recorded log-probabilities are the policy's own
    assert record["learning_rate"] == pytest.approx(1e-4)  # a PPO iteration's defaults: 1 pass at 1e-4
    assert "trained 1 iteration(s), 1 epoch(s) an iteration, 1 optimizer steps, 8 turns (ppo;" in (
        capsys.readouterr().out
    )
    argv = ["train", "--from", str(path), "--out", str(tmp_path / "x"), "--algo", "ppo", "--roles", "buyer"]
    assert main([*argv, *FAST]) == 2
    assert "--algo ppo trains only turns 'tiny' sampled itself" in capsys.readouterr().err


def test_rerun_resumes_and_other_sources_are_refused(policy, tmp_path, capsys):
    path = traced_file(tmp_path / "traces.jsonl", rewards={"seller": 1.0, "buyer": 0.0})
    run = tmp_path / "run"
    argv = ["train", "--from", str(path), "--out", str(run), "--algo", "sft", "--episodes-per-iteration", "2"]
    argv += ["--group-size", "1"]
    assert main([*argv, *FAST]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 6  # 3 epochs x two groups of two
    capsys.readouterr()
    assert main([*argv, *FAST]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main([*argv, *FAST, "--epochs", "4"]) == 0  # one more epoch extends the run
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 8
    assert "trained 2 iteration(s), 1 epoch(s) over the file" in capsys.readouterr().out
    assert main([*argv, *FAST, "--roles", "buyer"]) == 2
    assert "trained from other files, roles or reward; use a new --out" in capsys.readouterr().err


def test_command_line_mistakes_get_one_line(policy, tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r")]) == 2
    assert "give ENV (self-play) or --from FILE" in capsys.readouterr().err
    path = traced_file(tmp_path / "t.jsonl", rewards={"seller": 1.0, "buyer": 0.0}, episodes=2)
    assert main(["train", "--from", str(path), "--out", str(tmp_path / "r"), "--roles", "judge", *FAST]) == 2
    assert "--roles judge: no turn of that role (the files have seller, buyer)" in capsys.readouterr().err
    assert main(["train", "--from", str(path), "--out", str(tmp_path / "r"), "--reward", "nope", *FAST]) == 2
    assert "--reward nope: expected module:function" in capsys.readouterr().err


def test_iterations_keep_adjacent_groups_whole():
    episodes = [Episode(f"e{i}", metadata={"group_id": g}) for i, g in enumerate("aabbbc")]
    chunks = iteration_chunks(episodes, 2)
    assert [[e.episode_id for e in chunk] for chunk in chunks] == [["e0", "e1"], ["e2", "e3", "e4"], ["e5"]]


def test_self_play_sft_clones_every_well_formed_turn():
    config = RunConfig().with_overrides({"update.algo": "sft", "filter.min_reward": 0.0})
    assert behaviour_cloning_filter(config, 7) is not None
    assert behaviour_cloning_filter(config, 7).top_fraction == 1.0


def test_init_adapter_starts_from_a_saved_adapter(policy, tmp_path):
    config = RunConfig().with_overrides({"update.mixed_precision": "no"})
    trainer = PPOTrainer(policy, config, "first")
    with torch.no_grad():
        for name, param in trainer.module.peft_model.named_parameters():
            if "lora_B" in name and ".first." in name:
                param.normal_()
    trainer.module.peft_model.save_pretrained(str(tmp_path / "saved"), selected_adapters=["first"])
    saved = tmp_path / "saved" / "first"
    second = PPOTrainer(policy, config, "second")
    load_adapter_weights(second, saved)
    weights = {
        name.replace(".second.", "."): p
        for name, p in second.module.peft_model.named_parameters()
        if ".second." in name
    }
    firsts = {
        n.replace(".first.", "."): p for n, p in second.module.peft_model.named_parameters() if ".first." in n
    }
    assert weights.keys() == firsts.keys()
    assert all(torch.equal(weights[n], firsts[n]) for n in weights)
    other_rank = RunConfig().with_overrides({"lora.rank": 4})
    with pytest.raises(CheckpointError, match=r"LoRA settings differ: r 8 \(the run's 4\)"):
        load_adapter_weights(PPOTrainer(policy, other_rank, "third"), saved)


def test_the_default_roles_are_the_rewarded_ones():
    def episode(rewards: dict[str, float]) -> Episode:
        turns = [Turn(r, r, "x", [], [], [], source="model") for r in ("buyer", "seller", "judge")]
        return Episode("e", turns=turns, rewards=rewards)

    assert check_roles([episode({"buyer": 1.0, "seller": 0.0})], None, "sft") == ["buyer", "seller"]
    assert check_roles([episode({})], None, "sft") == ["buyer", "seller", "judge"]  # nothing rewarded: all
    assert check_roles([episode({})], ["judge"], "sft") == ["judge"]
    with pytest.raises(
        OmarError, match=r"--algo ppo: no episode rewards roles judge \(rewards are for buyer\)"
    ):
        check_roles([episode({"buyer": 1.0})], ["judge"], "ppo")


def test_messages_the_chat_template_refuses_get_one_line():
    tokenizer = copy.deepcopy(tiny_tokenizer())
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'tool' %}{{ raise_exception('no tool messages') }}{% endif %}"
        "{{ m['content'] }}{% endfor %}"
    )
    strict = SharedPolicy("strict", tiny_model(), tokenizer)
    messages = [{"role": "tool", "content": "42"}]
    episode = Episode("e", turns=[Turn("a", "a", "hi", [], [], [], source="model", messages=messages)])
    with pytest.raises(
        OmarError, match=r"episode 'e' turn 0: 'strict''s chat template cannot render its messages: "
    ):
        bc_samples([episode], ["a"], strict)


def test_ppo_in_critic_mode_from_a_file_trains_and_exits_0(policy, tmp_path, capsys):
    path = traced_file(tmp_path / "traces.jsonl", rewards={"seller": 1.0, "buyer": 0.0})
    run = tmp_path / "critic"
    argv = ["train", "--from", str(path), "--out", str(run), "--algo", "ppo"]
    argv += ["--advantage", "hierarchical-critic", "--no-degenerate.over-length", *FAST]
    assert main(argv) == 0, capsys.readouterr().err
    record = json.loads((run / "metrics.jsonl").read_text())
    assert "untrained" not in record
    assert record["trained_turns"] == 8 and record["advantage_abs_mean"] > 0 and "value_loss" in record
