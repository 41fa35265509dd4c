"""A SOTOPIA episode: two characters with private social goals, then an LLM judge scores each of them.

python examples/sotopia.py [MODEL]
"""

from __future__ import annotations

import sys

from langgraph_omar import DEFAULT_MODEL, ChatPolicy
from langgraph_omar.envs import sotopia
from langgraph_omar.tracing import TraceRecorder


def main(model: str = DEFAULT_MODEL, seed: int = 0, max_tokens: int = 64) -> None:
    players = ChatPolicy(model=model, temperature=0.7, max_tokens=max_tokens)
    judge = ChatPolicy(
        model=model, temperature=0.0
    )  # the default judge: one constrained JSON answer per agent
    graph = sotopia.build_graph(models={"agent_1": players, "agent_2": players}, model=judge)
    with TraceRecorder() as recorder:  # records every model call of the run, the graph is unchanged
        final = graph.invoke(sotopia.sample_input(seed))
    print(sotopia.transcript_text(final))
    print("rewards (goal / 10):", final.get("rewards"))
    print("judge scores:", final.get("reward_dimensions"))
    print("judge failures:", final["metrics"]["judge_failures"])
    turns = sum(len(e.turns) for e in recorder.trajectories())
    print(f"recorded {turns} model calls (players and judge)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_MODEL)
