"""Self-play negotiation: one local model plays buyer and seller, many episodes at once, every call traced.

python examples/negotiation.py                 # the default model, SmolLM2-135M-Instruct (a CPU is fine)
python examples/negotiation.py MODEL_DIR       # any transformers chat model directory or hub id
"""

from __future__ import annotations

import sys

from langgraph_omar import DEFAULT_MODEL, ChatPolicy
from langgraph_omar.envs import negotiation
from langgraph_omar.rollout import run_episodes
from langgraph_omar.trajectory import write_episodes


def main(model: str = DEFAULT_MODEL, episodes: int = 4, max_tokens: int = 48) -> None:
    chat = ChatPolicy(model=model, temperature=0.7, max_tokens=max_tokens)  # lazy: loads on the first call
    graph = negotiation.build_graph(model=chat)  # the same model for both roles: One Model, All Roles
    seeds = range(episodes)
    inputs = [negotiation.sample_input(seed) for seed in seeds]  # a different scenario per seed
    played, summary = run_episodes(graph, inputs, [{"seed": seed} for seed in seeds], progress=False)

    first = played[0]
    print(f"episode {first.episode_id}: rewards {first.rewards}")
    for turn in first.turns:
        print(f"  [{turn.role}] {turn.text.strip()}")
    agreements = sum(bool(e.metadata.get("metrics", {}).get("agreement")) for e in played)
    print(f"{agreements}/{len(played)} agreements; {summary.line()}")
    count = write_episodes("runs/examples/negotiation.jsonl", played, append=False)  # token-faithful turns
    print(f"wrote {count} trajectories to runs/examples/negotiation.jsonl")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_MODEL)
