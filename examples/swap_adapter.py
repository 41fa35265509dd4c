"""Swap a trained LoRA adapter into a graph that is already built, then measure it against the base model.

    python examples/swap_adapter.py runs/demo-TIME/train/adapter [MODEL]

Two ways to swap, both without rebuilding the graph:
1. per role: `ChatPolicy(adapter=...)` (a directory, or a name loaded in the engine) for some roles, the base
   for others; one engine serves both in the same batches;
2. by name: the graph's chat models ask for adapter "policy"; `engine.load_adapter(path, name="policy")`
   swaps the weights behind that name, and the next call serves them (its version is recorded per turn).
"""

from __future__ import annotations

import sys

from langgraph_omar import DEFAULT_MODEL, ChatPolicy, SharedPolicy
from langgraph_omar.envs import negotiation
from langgraph_omar.eval.arena import evaluate
from langgraph_omar.rollout import run_episodes


def main(adapter: str, model: str = DEFAULT_MODEL, max_tokens: int = 48, episodes: int = 4) -> None:
    engine = SharedPolicy.get(model)
    engine.load_adapter(adapter, name="policy")
    trained = ChatPolicy(model=model, adapter="policy", max_tokens=max_tokens)
    base = ChatPolicy(model=model, max_tokens=max_tokens)
    graph = negotiation.build_graph(models={"buyer": trained, "seller": base})  # built once

    inputs = [negotiation.sample_input(seed) for seed in range(episodes)]
    played, _ = run_episodes(graph, inputs, progress=False)
    print("buyer served by", {(t.adapter, t.adapter_version) for e in played for t in e.turns_of("buyer")})

    engine.load_adapter(adapter, name="policy")  # e.g. after more training: same name, new version
    played, _ = run_episodes(graph, inputs, progress=False)
    print("after the swap:", {(t.adapter, t.adapter_version) for e in played for t in e.turns_of("buyer")})

    result = evaluate("negotiation", "policy", episodes=episodes, model=model, max_tokens=max_tokens)
    print(result.headline())  # the trained adapter in each seat against the base model, paired by scenario


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else DEFAULT_MODEL)
