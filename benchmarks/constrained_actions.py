"""Fallback share of negotiation replies with and without `constrained_actions`, on the default model.

A fallback is a reply with no parsable action (treated as talk). The same price scenarios, seeds and sampling
settings run twice: free replies, then replies decoded under the action-line grammar
(`envs.negotiation.graph.action_line_pattern`). Prints replies, fallbacks and deals for both, and the first
episode's replies.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from langgraph_omar import ChatPolicy
from langgraph_omar.envs.negotiation.graph import build_graph, sample_input
from langgraph_omar.envs.negotiation.rules import NegotiationRules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=80)
    parser.add_argument("--temperature", type=float, default=0.7)
    args = parser.parse_args()
    model = ChatPolicy(temperature=args.temperature, max_tokens=args.max_tokens)
    inputs = [sample_input(seed, "price") for seed in range(args.episodes)]
    for constrained in (False, True):
        start = time.perf_counter()
        rules = NegotiationRules(max_turns=args.max_turns)
        graph = build_graph(model, kind="price", rules=rules, constrained_actions=constrained)
        finals = asyncio.run(graph.abatch(inputs, {"max_concurrency": len(inputs)}))
        replies = sum(len(final["transcript"]) for final in finals)
        fallbacks = sum(len(final.get("fallbacks") or []) for final in finals)
        deals = sum(bool(final["metrics"].get("deal")) for final in finals)
        print(
            f"constrained_actions={constrained}: {args.episodes} episodes, {replies} replies, {fallbacks} "
            f"fallbacks ({fallbacks / max(replies, 1):.0%}), {deals} deals, {time.perf_counter() - start:.0f} s"
        )
        for utterance in finals[0]["transcript"]:
            print("    " + repr(utterance["text"][:160]))


if __name__ == "__main__":
    main()
