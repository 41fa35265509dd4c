"""A one-role toy graph for the trainer tests (tiny model, reward = share of upper-case letters), written to
the minimal contract (a factory taking `model=`, a module-level `sample_input`), and
`python tests/selfplay_toy.py RUN_DIR ITERATIONS`: a deterministic toy run for the kill -9 resume test."""

from __future__ import annotations

import os
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph


class ToyState(TypedDict, total=False):
    prompt: str
    reply: str
    rewards: dict[str, float]


def upper_share(text: str) -> float:
    """Share of the reply's characters that are upper-case letters: 'OFFer' -> 3 / 5 = 0.6; '' -> 0.

    The tiny tokenizer's corpus has upper-case words (OFFER, ACCEPT, VOTE, ...), so the untrained model says
    some now and then (a dense signal) and can learn to say more of them.
    """
    return sum(c.isupper() for c in text) / len(text) if text else 0.0


def toy_graph(model: Any) -> Any:
    async def speaker(state: ToyState) -> dict[str, Any]:
        reply = await model.ainvoke(state["prompt"])
        return {"reply": reply.text, "rewards": {"speaker": upper_share(reply.text)}}

    graph = StateGraph(ToyState)
    graph.add_node("speaker", speaker, metadata={"role": "speaker"})
    graph.add_edge(START, "speaker")
    graph.add_edge("speaker", END)
    return graph.compile()


def sample_input(seed: int) -> dict[str, Any]:
    return {"prompt": PROMPTS[seed % len(PROMPTS)]}


def toy_env() -> Any:
    from langgraph_omar.envs.registry import load_environment

    return load_environment("selfplay_toy:toy_graph")


def toy_policy(name: str = "tiny", seed: int = 0, sharpness: float = 12.0) -> Any:
    """A registered tiny engine whose final norm is scaled up, so its next-token distribution is peaked
    enough (entropy well below log V) for a LoRA on a 32-wide model to move it in a few updates."""
    import torch

    from langgraph_omar.serving.engine import SharedPolicy
    from langgraph_omar.testing import tiny_model, tiny_tokenizer

    model: Any = tiny_model(seed)
    with torch.no_grad():
        model.model.norm.weight.fill_(sharpness)
    model = model.to(os.environ.get("OMAR_TEST_DEVICE", "cpu"))  # cuda: the same tests on a GPU
    # float32 prefill: the toy tests check recorded and recomputed log-probabilities agree exactly
    policy = SharedPolicy(name, model, tiny_tokenizer(), max_wait_ms=5, prefill_dtype="float32")
    SharedPolicy.register(policy)
    return policy


PROMPTS = [f"Say something about {i}." for i in range(3)]


def toy_config(seed: int, iterations: int, **sections: dict[str, Any]) -> Any:
    from langgraph_omar.rl.config import RunConfig

    data: dict[str, dict[str, Any]] = {
        "env": {"name": "selfplay_toy:toy_graph"},
        "selfplay": {
            "model": "tiny",
            "iterations": iterations,
            "episodes_per_iteration": 32,
            "group_size": 4,
            "max_tokens": 8,
            "seed": seed,
            "max_concurrency": 32,
        },
        "update": {"epochs": 4, "micro_batch_size": 16, "gradient_accumulation_steps": 1, "seed": seed},
        "optimizer": {"learning_rate": 8e-3},
        "lora": {"target_modules": ["all-linear"]},
        "degenerate": {"over_length": False, "repeated": False},  # 8-token replies; loops are fine here
    }
    if os.environ.get("OMAR_TEST_DEVICE", "cpu") == "cpu":  # float32 as before: the tests compare exactly
        data["selfplay"]["prefill_dtype"] = "float32"
        data["update"]["mixed_precision"] = "no"
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return RunConfig.from_dict(data)


def main(argv: list[str]) -> None:
    """`python tests/selfplay_toy.py RUN_DIR ITERATIONS`: a deterministic toy run (one episode at a time)."""
    from langgraph_omar.rl.selfplay import run_selfplay

    run_dir, iterations = argv[0], int(argv[1])
    policy = toy_policy(seed=0)
    config = toy_config(
        0,
        iterations,
        selfplay={"episodes_per_iteration": 4, "group_size": 2, "max_concurrency": 1},
        update={"micro_batch_size": 2, "gradient_accumulation_steps": 2},
    )
    run_selfplay(config, run_dir, toy_env(), policy=policy, progress=False)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
