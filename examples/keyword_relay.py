"""A graph of one's own, written with plain LangGraph against the minimal contract (docs/environments.md).

Three roles write a four-line story in turn; each must work its own secret word into its lines. The
`continuer` role is played by two nodes (`middle_1`, `middle_2`, both `metadata={"role": "continuer"}`).
The reward is verifiable: the share of a role's lines that contain its word.

    cd examples
    omar rollout keyword_relay:build_graph --episodes 8 --out runs/relay.jsonl
    omar train keyword_relay:build_graph --out runs/relay --iterations 4 --group-size 4
    omar eval keyword_relay:build_graph --adapter runs/relay/adapter --episodes 16 --out runs/relay-eval

The contract: `build_graph(model=...)` returns a compiled graph whose every role calls `model`;
`sample_input(seed)` is the input state of scenario `seed`; the final state's `rewards` maps roles to floats.
"""

from __future__ import annotations

import random
from typing import Annotated, Any, TypedDict

from langchain_core.language_models import BaseChatModel
from langgraph.graph import END, START, StateGraph

WORDS = ["river", "lantern", "apple", "window", "thunder", "garden", "silver", "candle", "mountain", "violin"]
# node -> role; two nodes play the continuer
TURNS = {"opening": "opener", "middle_1": "continuer", "middle_2": "continuer", "ending": "closer"}


def _append(lines: list[dict[str, str]], new: list[dict[str, str]]) -> list[dict[str, str]]:
    return lines + new


class RelayState(TypedDict, total=False):
    words: dict[str, str]  # role -> its secret word
    lines: Annotated[list[dict[str, str]], _append]
    rewards: dict[str, float]


def sample_input(seed: int) -> dict[str, Any]:
    """Three different secret words, drawn from the seed."""
    chosen = random.Random(seed).sample(WORDS, 3)
    return {"words": dict(zip(("opener", "continuer", "closer"), chosen, strict=True)), "lines": []}


def score(state: RelayState) -> dict[str, Any]:
    """Each role's share of lines that contain its word (case-insensitive)."""
    rewards = {}
    for role, word in state["words"].items():
        own = [line["text"].lower() for line in state["lines"] if line["role"] == role]
        rewards[role] = sum(word in text for text in own) / len(own) if own else 0.0
    return {"rewards": rewards}


def build_graph(model: BaseChatModel | None = None) -> Any:
    if model is None:
        from langgraph_omar import ChatPolicy

        model = ChatPolicy(max_tokens=24)

    def writer(role: str) -> Any:
        async def write(state: RelayState) -> dict[str, Any]:
            story = " ".join(line["text"] for line in state["lines"]) or "(nothing yet)"
            prompt = (
                f"We write a short story together, one sentence each. The story so far: {story}\n"
                f"Write the next sentence. It must contain the word '{state['words'][role]}'."
            )
            reply = await model.ainvoke(prompt)
            return {"lines": [{"role": role, "text": reply.text.strip()}]}

        return write

    graph = StateGraph(RelayState)
    previous = START
    for node, role in TURNS.items():
        graph.add_node(node, writer(role), metadata={"role": role})
        graph.add_edge(previous, node)
        previous = node
    graph.add_node("score", score)
    graph.add_edge(previous, "score")
    graph.add_edge("score", END)
    return graph.compile()
