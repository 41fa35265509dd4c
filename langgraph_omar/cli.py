"""`omar`: rollout, train, demo. Bad input ends with one line on stderr (OMAR_DEBUG=1 shows the traceback)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from langgraph_omar.errors import OmarError


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="smollm2-135m-instruct", help="embedded name, model directory or hub id"
    )
    parser.add_argument(
        "--adapter", default=None, help="LoRA adapter directory for every role (default: base)"
    )
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-tokens", type=int, default=64, help="the most new tokens per model call")
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda when available, else cpu)"
    )


def _rollout(args: argparse.Namespace) -> None:
    from langgraph_omar.chat_model import ChatPolicy
    from langgraph_omar.rollout import load_target, parse_input, run_episodes
    from langgraph_omar.trajectory_io import write_episodes

    model = ChatPolicy(
        model=args.model,
        adapter=args.adapter,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        device=args.device,
    )
    target = load_target(args.graph, model=model)
    fixed = parse_input(args.input)
    seeds = [args.seed + i for i in range(args.episodes)]
    inputs = [fixed if fixed is not None else target.sample_input(seed) for seed in seeds]
    metadata = [
        {"seed": seed, "sampling_seed": seed, "scenario_id": f"{args.graph}-{seed}"} for seed in seeds
    ]
    episodes, summary = run_episodes(target.graph, inputs, metadata, max_concurrency=args.max_concurrency)
    written = write_episodes(args.out, episodes)
    for episode in episodes:
        if episode.status != "ok":
            print(f"failed episode {episode.episode_id}: {episode.error}", file=sys.stderr)
    print(summary.line())
    print(f"wrote {written} episodes to {args.out}")


def _demo(args: argparse.Namespace) -> None:
    from langgraph_omar.demo import run_demo

    out = Path(args.out) if args.out else Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    run_demo(out, episodes=args.episodes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omar", description="One Model, All Roles: self-play RL for LangGraph"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    rollout = commands.add_parser("rollout", help="run episodes of a graph and export their trajectories")
    rollout.add_argument(
        "graph", help="negotiation | sotopia | werewolf | module:attribute (graph or factory)"
    )
    rollout.add_argument("--episodes", type=int, default=8)
    rollout.add_argument("--out", required=True, help="trajectory file (.jsonl or .parquet); appended to")
    rollout.add_argument("--seed", type=int, default=0, help="scenario seed of the first episode")
    rollout.add_argument("--input", default=None, help="JSON input state for every episode (user graphs)")
    rollout.add_argument("--max-concurrency", type=int, default=64)
    _add_model_arguments(rollout)
    rollout.set_defaults(run=_rollout)

    demo = commands.add_parser("demo", help="the main job on the default model (see README)")
    demo.add_argument("--out", default=None, help="folder for every artefact (default: runs/demo-TIME)")
    demo.add_argument("--episodes", type=int, default=8)
    demo.set_defaults(run=_demo)

    try:
        from langgraph_omar.rl.selfplay import add_train_arguments, run_train
    except ImportError:  # the trainer's optional pieces are missing
        pass
    else:
        train = commands.add_parser("train", help="self-play RL on an environment")
        add_train_arguments(train)
        train.set_defaults(run=run_train)
    from langgraph_omar import evaluation, export

    for name, module in [("eval", evaluation), ("export", export)]:
        sub = commands.add_parser(name, help=module.COMMAND_HELP)
        getattr(module, f"add_{name}_arguments")(sub)
        sub.set_defaults(run=getattr(module, f"run_{name}"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], None] = args.run
    try:
        run(args)
    except (OmarError, ValueError, FileNotFoundError) as exc:
        if os.environ.get("OMAR_DEBUG"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"omar {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
