"""Arena evaluation: the model under test against an opponent, seat by seat, on the same scenarios.

For each scenario seed and each seat of the environment (a role, or a team in Werewolf; see `arena`), one
game is played with the tested adapter in that seat and the opponent (the base model by default, or another
adapter) in every other seat: N seeds of a two-seat game are 2N games. Every game of a seed uses the same
scenario and, role by role, the same sampling seeds (`SeededChatPolicy`). Both sides are `ChatPolicy` objects over one engine, so their calls are
served in the same batches. A judge (SOTOPIA) always runs on the base model, never on a tested adapter.

Statistics (`confidence`, 95% by default; see `stats`): per seat and metric, each side's mean where it sat
in that seat and the paired difference tested - opponent on the same seeds, with a Student t interval over
seeds; the sides' means alone get a Wilson interval for 0/1 outcomes (wins, agreements), a t interval
otherwise. Per-game metrics (agreement, rounds) are reported by the seat the tested model took.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import PrivateAttr
from tqdm.auto import tqdm

from langgraph_omar.arena import OUTCOME, Arena, make_arena
from langgraph_omar.chat_model import ChatPolicy
from langgraph_omar.errors import OmarError
from langgraph_omar.models import DEFAULT_MODEL
from langgraph_omar.stats import ALL_SEATS, Comparison, Game, GameMetric, compare_seats, summarize_games
from langgraph_omar.trajectory import Episode

COMMAND_HELP = "arena evaluation of an adapter against the base model (or another adapter), with a report"
TESTED, OPPONENT = "tested", "opponent"
CI_METHOD = (
    "paired differences: Student t interval over scenario seeds; sides alone: Wilson score interval for "
    "0/1 outcomes, Student t interval for other values"
)


@dataclass
class EvalConfig:
    """What to evaluate and how. Every field carries its meaning in `metadata['help']`."""

    env: str = field(metadata={"help": "negotiation | sotopia | werewolf"})
    adapter: str = field(
        metadata={"help": "the tested LoRA adapter: a directory, or a name loaded in the engine"}
    )
    opponent: str | None = field(
        default=None, metadata={"help": "the opponent's adapter; None: the base model"}
    )
    episodes: int = field(default=8, metadata={"help": "scenario seeds; each is played once per seat"})
    seed: int = field(default=0, metadata={"help": "the first scenario seed (seeds seed .. seed+episodes-1)"})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "the base model both adapters belong to"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature of both sides"})
    max_tokens: int = field(default=64, metadata={"help": "the most new tokens per player call"})
    judge_max_tokens: int = field(default=256, metadata={"help": "the most new tokens per judge call"})
    device: str | None = field(default=None, metadata={"help": "torch device (default: cuda if available)"})
    max_concurrency: int = field(default=32, metadata={"help": "games run at once"})
    confidence: float = field(default=0.95, metadata={"help": "confidence level of the intervals"})
    arena_options: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "arena options, e.g. {'kind': 'split'} or {'config': 'guard_8'}"},
    )

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise OmarError(f"episodes must be >= 1, got {self.episodes}")
        if self.temperature < 0 or self.max_tokens < 1 or self.judge_max_tokens < 1:
            raise OmarError("temperature must be >= 0 and max_tokens, judge_max_tokens >= 1")
        if self.max_concurrency < 1:
            raise OmarError(f"max_concurrency must be >= 1, got {self.max_concurrency}")
        if not 0 < self.confidence < 1:
            raise OmarError(f"confidence must be in (0, 1), got {self.confidence}")

    def seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.episodes))


@dataclass
class EvalResult:
    config: dict[str, Any]
    seats: list[str]
    comparisons: list[Comparison]
    game_metrics: list[GameMetric]
    games: list[Game]
    metric_help: dict[str, str]
    episodes: list[Episode] = field(default_factory=list, repr=False)  # transcripts; not in to_dict
    method: str = CI_METHOD

    def comparison(self, metric: str, seat: str = ALL_SEATS) -> Comparison | None:
        return next((c for c in self.comparisons if c.metric == metric and c.seat == seat), None)

    @property
    def failed_games(self) -> int:
        return sum(g.status != "ok" for g in self.games)

    def headline(self) -> str:
        """One line: the overall paired reward difference, with its interval."""
        overall = self.comparison("reward")
        games = f"{len(self.games)} games, {self.failed_games} failed"
        if overall is None or overall.difference is None:
            return f"reward, tested - opponent: no paired games; {games}"
        kind = "" if overall.kind == OUTCOME else f" ({overall.kind})"
        return f"reward{kind}, tested - opponent: {overall.difference.text()}; {games}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(replace(self, episodes=[]))
        del data["episodes"]
        return data


# ---- playing the games --------------------------------------------------------------------------------------


class SeededChatPolicy(ChatPolicy):
    """A ChatPolicy whose k-th call samples with its own seed, derived from (`seed`, k).

    One fixed seed for every call would replay the same random draws on every turn (a small model then
    tends to repeat the last message word for word); a seed per call keeps games reproducible and lets
    the same role in the two seatings of a scenario draw the same numbers, as pairing wants.
    """

    _calls: Any = PrivateAttr(default_factory=itertools.count)

    def _next_seed(self) -> int:
        return ((self.seed or 0) * 1_000_003 + next(self._calls)) % 2**62

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        kwargs.setdefault("seed", self._next_seed())
        return super()._generate(messages, stop, run_manager, **kwargs)

    async def _agenerate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> Any:
        kwargs.setdefault("seed", self._next_seed())
        return await super()._agenerate(messages, stop, run_manager, **kwargs)


def role_seed(scenario_seed: int, role: str) -> int:
    """A stable seed per (scenario, role): the role draws the same numbers whichever side plays it."""
    return zlib.crc32(f"{scenario_seed}/{role}".encode())


def _chat_models(config: EvalConfig) -> tuple[Any, Any, ChatPolicy]:
    """Factories ((scenario seed, role) -> chat model) of the tested side and the opponent, and the judge."""
    from langgraph_omar.engine import SharedPolicy

    engine = SharedPolicy.get(config.model, config.device)
    tested_adapter = engine.ensure_adapter(config.adapter)  # a bad adapter fails here, before any game
    opponent_adapter = engine.ensure_adapter(config.opponent) if config.opponent else None

    def player(adapter: str | None) -> Any:
        def make(scenario_seed: int, role: str) -> ChatPolicy:
            return SeededChatPolicy(
                model=config.model,
                device=config.device,
                adapter=adapter,
                temperature=config.temperature,
                max_tokens=config.max_tokens,
                seed=role_seed(scenario_seed, role),
            )

        return make

    judge = ChatPolicy(
        model=config.model, device=config.device, temperature=0.0, max_tokens=config.judge_max_tokens
    )
    return player(tested_adapter), player(opponent_adapter), judge


async def _play(config: EvalConfig, arena: Arena, progress: bool) -> tuple[list[Game], list[Episode]]:
    from langgraph_omar.rollout import arun_episodes

    tested, opponent, judge = _chat_models(config)
    plans = []
    for seed in config.seeds():
        seating = arena.seating(seed)
        for seat in arena.seats:
            sides = {role: TESTED if role_seat == seat else OPPONENT for role, role_seat in seating.items()}
            plans.append(Game(seed, seat, f"eval-{arena.name}-s{seed}-{seat}", sides, seating))
    limit = asyncio.Semaphore(config.max_concurrency)
    bar = tqdm(total=len(plans), desc="eval games", unit="game", disable=not progress)

    async def play(game: Game) -> Episode:
        models = {
            role: (tested if side == TESTED else opponent)(game.seed, role)
            for role, side in game.sides.items()
        }
        graph = arena.graph(models, judge, game.seed)
        metadata = {
            "episode_id": game.episode_id,
            "seed": game.seed,
            "scenario_id": f"{arena.name}-{game.seed}",
        }
        async with limit:
            played, _ = await arun_episodes(
                graph,
                [arena.input(game.seed)],
                [metadata],
                progress=False,
                recursion_limit=arena.recursion_limit,
            )
        bar.update(1)
        return played[0]

    try:
        episodes = await asyncio.gather(*(play(game) for game in plans))
    finally:
        bar.close()
    for game, episode in zip(plans, episodes, strict=True):
        episode.metadata["arena"] = {
            "tested_seat": game.tested_seat,
            "sides": game.sides,
            "seating": game.seating,
        }
        game.status, game.error = episode.status, episode.error
        if episode.status == "ok":
            game.seat_values = arena.seat_values(episode, game.seating)
            game.game_values = arena.game_values(episode)
    return plans, list(episodes)


def run_arena(config: EvalConfig, progress: bool = True) -> EvalResult:
    """Play every (seed, seat) game of `config` and compute the statistics."""
    arena = make_arena(config.env, **config.arena_options)
    games, episodes = asyncio.run(_play(config, arena, progress))
    return EvalResult(
        config={**asdict(config), "opponent_label": config.opponent or "base"},
        seats=list(arena.seats),
        comparisons=compare_seats(
            games, arena.seats, arena.metric_kinds, arena.rate_metrics, config.confidence
        ),
        game_metrics=summarize_games(
            games, arena.seats, arena.metric_kinds, arena.rate_metrics, config.confidence
        ),
        games=games,
        metric_help=dict(arena.metric_help),
        episodes=episodes,
    )


def evaluate(
    env: str,
    adapter: str,
    opponent: str | None = None,
    episodes: int = 8,
    seed: int = 0,
    *,
    progress: bool = False,
    **options: Any,
) -> EvalResult:
    """Arena evaluation of `adapter` against `opponent` (None: the base model); options: `EvalConfig` fields.

    result = evaluate("negotiation", "runs/neg/adapter", episodes=16)
    print(result.headline())
    result.comparison("reward", "buyer").difference      # Interval(mean, low, high, n, method)
    """
    return run_arena(EvalConfig(env, adapter, opponent, episodes, seed, **options), progress=progress)


# ---- command line -------------------------------------------------------------------------------------------


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("env", help="negotiation | sotopia | werewolf")
    parser.add_argument("--adapter", required=True, help="the tested LoRA adapter (directory or loaded name)")
    parser.add_argument("--vs", default=None, help="the opponent's adapter (default: the base model)")
    parser.add_argument("--episodes", type=int, default=8, help="scenario seeds, each played once per seat")
    parser.add_argument("--seed", type=int, default=0, help="the first scenario seed")
    parser.add_argument("--out", required=True, help="folder for eval.json, the plots and report.html")
    parser.add_argument(
        "--run", dest="run_dir", default=None, help="a training run folder: plot its metrics.jsonl"
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the base model (name, directory or hub id)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-tokens", type=int, default=64, help="the most new tokens per player call")
    parser.add_argument("--max-turns", type=int, default=None, help="turn limit (werewolf: round limit)")
    parser.add_argument("--kind", default="price", help="negotiation scenario kind: price | split")
    parser.add_argument("--werewolf-config", default="classic_6", help="bundled name or config file")
    parser.add_argument(
        "--sotopia-data", default=None, help="a SOTOPIA folder (default: the built-in scenarios)"
    )
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda when available, else cpu)"
    )
    parser.add_argument("--max-concurrency", type=int, default=32, help="games run at once")


def arena_options(args: argparse.Namespace) -> dict[str, Any]:
    """The arena options the command-line flags ask for, for `args.env`."""
    if args.env == "negotiation":
        from langgraph_omar.envs.negotiation_rules import NegotiationRules

        options: dict[str, Any] = {"kind": args.kind}
        if args.max_turns is not None:
            options["graph_options"] = {"rules": NegotiationRules(max_turns=args.max_turns)}
        return options
    if args.env == "sotopia":
        from langgraph_omar.envs.sotopia_rules import SotopiaRules

        options = {"data_dir": args.sotopia_data}
        if args.max_turns is not None:
            options["graph_options"] = {"rules": SotopiaRules(max_turns=args.max_turns)}
        return options
    if args.env == "werewolf":
        rules = {"max_rounds": args.max_turns} if args.max_turns is not None else {}
        return {"config": args.werewolf_config, "rules": rules}
    return {}


def run_eval(args: argparse.Namespace) -> None:
    from langgraph_omar.report import write_report

    config = EvalConfig(
        env=args.env,
        adapter=args.adapter,
        opponent=args.vs,
        episodes=args.episodes,
        seed=args.seed,
        model=args.model,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        device=args.device,
        max_concurrency=args.max_concurrency,
        arena_options=arena_options(args),
    )
    run_dir = Path(args.run_dir) if args.run_dir is not None else None
    if run_dir is not None and not (run_dir / "metrics.jsonl").is_file():
        raise OmarError(f"--run {run_dir}: no metrics.jsonl in that folder")
    result = run_arena(config)
    paths = write_report(result, Path(args.out), run_dir=run_dir)
    print(result.headline())
    for name, path in paths.items():
        print(f"{name}: {path}")
