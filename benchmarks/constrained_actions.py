"""Fallback share with and without constrained decoding of the game's actions, on the default model.

A fallback is a reply the game could not read as a legal action (negotiation: talk; Werewolf: a move replaced
by a random legal one). The same scenarios, seeds and sampling settings run twice: free replies, then replies
decoded under the game's grammar (negotiation's `constrained_actions`: a message line, then a legal action
line; Werewolf's `constrained_moves`: exactly a legal move). Prints decisions, fallbacks and the outcome for
both, and the first episode's replies.

    python benchmarks/constrained_actions.py --episodes 8                    # negotiation
    python benchmarks/constrained_actions.py --game werewolf --episodes 4 --max-tokens 48
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from langgraph_omar import ChatPolicy
from langgraph_omar.envs.registry import load_environment

# per game: the option that turns the grammar on, the options of the setting, how to count decisions and
# fallbacks of a final state, and the outcome worth printing
GAMES: dict[str, dict[str, Any]] = {
    "negotiation": {
        "switch": "constrained_actions",
        "decisions": lambda final: len(final["transcript"]),
        "outcome": lambda finals: f"{sum(bool(f['metrics'].get('deal')) for f in finals)} deals",
        "replies": lambda final: [u["text"] for u in final["transcript"]],
    },
    "werewolf": {
        "switch": "constrained_moves",
        "decisions": lambda final: sum(final["metrics"]["moves_by_role"].values()),
        "outcome": lambda finals: f"werewolves won {sum(f['winner'] == 'Werewolves' for f in finals)}",
        "replies": lambda final: [f"{a['player']}: {a['raw']}" for a in final["actions"]],
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", choices=sorted(GAMES), default="negotiation")
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--max-turns", type=int, default=4, help="negotiation: turns per game")
    parser.add_argument("--max-tokens", type=int, default=80)
    parser.add_argument("--temperature", type=float, default=0.7)
    args = parser.parse_args()
    game = GAMES[args.game]
    options = {"kind": "price", "max_turns": args.max_turns} if args.game == "negotiation" else {}
    model = ChatPolicy(temperature=args.temperature, max_tokens=args.max_tokens)
    for constrained in (False, True):
        start = time.perf_counter()
        env = load_environment(args.game, options | {game["switch"]: constrained})
        inputs = [env.sample_input(seed) for seed in range(args.episodes)]
        config = {"max_concurrency": len(inputs), "recursion_limit": env.recursion_limit}
        finals = asyncio.run(env.build_graph(model).abatch(inputs, config))
        decisions = sum(game["decisions"](final) for final in finals)
        fallbacks = sum(len(final.get("fallbacks") or []) for final in finals)
        print(
            f"{game['switch']}={constrained}: {args.episodes} episodes, {decisions} decisions, {fallbacks} "
            f"fallbacks ({fallbacks / max(decisions, 1):.0%}), {game['outcome'](finals)}, "
            f"{time.perf_counter() - start:.0f} s"
        )
        for reply in game["replies"](finals[0])[:12]:
            print("    " + repr(reply[:160]))


if __name__ == "__main__":
    main()
