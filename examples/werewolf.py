"""A Werewolf game: every player (werewolves, seer, witch, villagers) is the same local model.

python examples/werewolf.py [MODEL]
"""

from __future__ import annotations

import sys

from langgraph_omar import DEFAULT_MODEL, ChatPolicy
from langgraph_omar.envs import werewolf


def main(model: str = DEFAULT_MODEL, seed: int = 7, max_tokens: int = 64, max_rounds: int = 4) -> None:
    chat = ChatPolicy(model=model, temperature=0.7, max_tokens=max_tokens)
    config = werewolf.load_werewolf_config(
        werewolf.bundled_config_path("classic_6"), rules={"max_rounds": max_rounds}
    )
    graph = werewolf.build_graph(chat, config, seed=seed)
    final = graph.invoke({"seed": seed})  # roles are dealt from the seed
    for event in final["events"][-8:]:
        print(event)
    print("roles:", final["roles"])
    print("winner:", final["winner"] or "draw", "| rewards:", final["rewards"])
    print("vote accuracy:", final["metrics"]["vote_accuracy"], "| fallbacks:", final["metrics"]["fallbacks"])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_MODEL)
