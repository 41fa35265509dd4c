"""Rows with a shared prompt prefix: found, grouped, and run once with the same results as whole rows."""

from __future__ import annotations

import torch
from test_trainer import config, lora_state, trainer_for

from langgraph_omar.rl.advantages import EmaBaseline
from langgraph_omar.rl.batch import build_batch
from langgraph_omar.rl.micro_batches import first_epoch_micro_batches, plan_steps
from langgraph_omar.rl.shared_prefix import cluster_order, prefix_clusters, shared_prefix_length
from langgraph_omar.serving.sampling import SamplingParams
from langgraph_omar.trajectory import Episode, Turn

SYSTEM = " ".join(
    ["You negotiate the price of a bike; stay polite, make offers, and say DEAL to accept."] * 4
)


def test_shared_prefix_length_stops_at_the_first_difference_and_one_short_of_the_shortest_row():
    ids = torch.tensor([[1, 2, 3, 4, 5, 0], [1, 2, 3, 9, 9, 9], [1, 2, 3, 4, 0, 0]])
    assert shared_prefix_length(ids, torch.tensor([5, 6, 4]), minimum=1) == 3
    assert shared_prefix_length(ids[[0, 2]], torch.tensor([5, 4]), minimum=1) == 3  # shortest row: 4 - 1
    assert shared_prefix_length(ids, torch.tensor([5, 6, 4]), minimum=4) == 0
    assert shared_prefix_length(ids[:1], torch.tensor([5]), minimum=1) == 0


def test_prefix_clusters_group_rows_that_begin_alike_and_keep_every_row_once():
    rows = [[5, 5, 1], [1, 2, 3, 4], [5, 5, 2], [1, 2, 9], [7]]
    assert prefix_clusters(rows, minimum=2) == [[1, 3], [0, 2], [4]]
    order = cluster_order(rows, [0, 1, 2, 3, 4], torch.Generator().manual_seed(0))
    assert sorted(order) == [0, 1, 2, 3, 4]
    assert abs(order.index(0) - order.index(2)) == 1 and abs(order.index(1) - order.index(3)) == 1


def shared_prompt_episodes(policy, episodes: int = 2) -> list[Episode]:
    """Two-role episodes whose prompts all begin with the same long system prompt."""
    out = []
    for e in range(episodes):
        turns = []
        for r, role in enumerate(("a", "b")):
            messages = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"{role} offer {e}"},
            ]
            ids, _ = policy.render(messages, 8)
            rec = policy.generate(ids, SamplingParams(temperature=1.0, max_new_tokens=8, seed=10 * e + r))
            turns.append(Turn(role, role, rec.text, rec.prompt_ids, rec.completion_ids, rec.logprobs))
        out.append(Episode(f"e{e}", turns, {"a": 1.0, "b": 0.0}, metadata={"group_id": f"g{e}"}))
    return out


def test_a_shared_prefix_forward_gives_the_whole_rows_hidden_states_and_gradients():
    trainer = trainer_for(config())
    episodes = shared_prompt_episodes(trainer.policy)
    batch = build_batch(episodes, trainer.config.advantage, EmaBaseline(), 0)
    assert batch is not None
    shared = shared_prefix_length(batch.input_ids, batch.lengths)
    assert shared >= 32
    results = []
    for prefix in (0, shared):
        trainer.module.zero_grad(set_to_none=True)
        hidden, _ = trainer.module(batch.input_ids, batch.attention_mask, prefix)
        live = batch.attention_mask.bool()
        (hidden[live].float().pow(2).mean()).backward()
        grads = {n: p.grad.clone() for n, p in trainer.module.named_parameters() if p.grad is not None}
        results.append((hidden[live].detach(), grads))
    (whole, whole_grads), (split, split_grads) = results
    assert torch.allclose(whole, split, atol=1e-5)
    assert whole_grads.keys() == split_grads.keys() and whole_grads
    for name in whole_grads:
        assert torch.allclose(whole_grads[name], split_grads[name], atol=1e-5, rtol=1e-4), name


def test_an_update_with_shared_prefixes_equals_the_update_on_whole_rows():
    states = []
    for shared in (False, True):
        cfg = config(
            update={"shared_prefix": shared, "skip_zero_advantage": False, "old_logprobs": "recompute"}
        )
        trainer = trainer_for(cfg)
        episodes = shared_prompt_episodes(trainer.policy)  # 4 turns: one micro-batch, one optimizer step
        batch = build_batch(episodes, cfg.advantage, EmaBaseline(), 0)
        assert batch is not None
        batch.advantages = torch.linspace(-1, 1, batch.advantages.numel()).view_as(batch.advantages)
        batch.advantages = batch.advantages * batch.completion_mask
        metrics = trainer.update(batch, episodes)
        assert metrics["optimizer_steps"] == 1
        assert metrics["ratio_mean"] == 1.0  # the recompute ran the step's own forwards: exactly 1
        states.append(lora_state(trainer))
    for key in states[0]:
        assert torch.allclose(states[0][key], states[1][key], atol=1e-6), key


def test_the_recompute_runs_the_first_epochs_micro_batches_of_every_process():
    prompts = [[r % 3] * 40 + [r] for r in range(11)]
    settings = dict(micro_batch_size=2, accumulation=2, processes=2, epochs=2, seed=3, share_prefixes=True)
    steps = plan_steps(range(11), prompts, [41] * 11, **settings)  # type: ignore[arg-type]
    first = first_epoch_micro_batches(steps, 11, rows_per_step=8)
    assert first == [micro for step in steps[:2] for share in step.micro_batches for micro in share if micro]
    assert sorted(r for micro in first for r in micro) == list(range(11))
    # one process, steps of 4 rows, clusters of 4, 4 and 3 rows: every micro-batch lies within one cluster
    single = dict(settings, accumulation=2, processes=1)
    micro = first_epoch_micro_batches(plan_steps(range(11), prompts, [41] * 11, **single), 11, 4)  # type: ignore[arg-type]
    assert all(len({r % 3 for r in rows}) == 1 for rows in micro)
