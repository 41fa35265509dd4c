"""Arena evaluation: the model under test against an opponent, seat by seat, on the same scenarios.

For each scenario seed and each seat of the environment (a role, or a team in Werewolf: `Environment.seating`),
one game is played with the tested adapter in that seat and the opponent (the base model by default, or another
adapter) in every other seat: N seeds of a two-seat game are 2N games. Every game of a seed plays the same
scenario with the same sampling seed (a call's draws follow from it and the call's prompt tokens). All games run
on ONE compiled graph over one engine: each game's run metadata seats its adapters (`adapter_by_role`), so both
sides' calls are served in the same batches. A judge (SOTOPIA) runs on the base model, never on a tested adapter.
Any environment works, a graph of one's own included: when it does not declare its roles, they are learnt from
the rewards of one base-model episode, played first.

Statistics (`confidence`, 95% by default; see `stats`): per seat and metric, each side's mean where it sat
in that seat and the paired difference tested - opponent on the same seeds, with a Student t interval over
seeds; the sides' means alone get a Wilson interval for 0/1 outcomes (wins, agreements), a t interval
otherwise. Per-game metrics (agreement, rounds) are reported by the seat the tested model took.
"""

from __future__ import annotations

import asyncio
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from langgraph_omar.chat_model import JUDGE_ROLE, ChatPolicy, served_judge
from langgraph_omar.envs.environment import OUTCOME, Environment
from langgraph_omar.envs.registry import ContractWarning, load_environment
from langgraph_omar.errors import OmarError
from langgraph_omar.eval.stats import ALL_SEATS, Comparison, Game, GameMetric, compare_seats, summarize_games
from langgraph_omar.rollout import arun_episodes
from langgraph_omar.serving.settings import ServingSettings
from langgraph_omar.trajectory import Episode
from langgraph_omar.trajectory.metadata import episode_metadata

TESTED, OPPONENT = "tested", "opponent"
CI_METHOD = (
    "paired differences: Student t interval over scenario seeds; sides alone: Wilson score interval for "
    "0/1 outcomes, Student t interval for other values"
)


@dataclass
class EvalConfig(ServingSettings):
    """What to evaluate and how: the model, its sampling and device come from `ServingSettings` (the fields
    `omar rollout` shares). Every field carries its meaning in `metadata['help']`."""

    env: str = field(metadata={"help": "a registered environment or module:attribute (see `omar envs`)"})
    adapter: str = field(
        metadata={"help": "the tested LoRA adapter: a directory, or a name loaded in the engine"}
    )
    opponent: str | None = field(
        default=None, metadata={"help": "the opponent's adapter; None: the base model"}
    )
    episodes: int = field(default=8, metadata={"help": "scenario seeds; each is played once per seat"})
    seed: int = field(default=0, metadata={"help": "the first scenario seed (seeds seed .. seed+episodes-1)"})
    judge_max_tokens: int = field(default=256, metadata={"help": "the most new tokens per judge call"})
    max_concurrency: int = field(default=32, metadata={"help": "games run at once"})
    confidence: float = field(default=0.95, metadata={"help": "confidence level of the intervals"})
    env_options: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "the environment's options, e.g. {'kind': 'split'} or {'werewolf_config': 'guard_8'}"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.episodes < 1:
            raise OmarError(f"episodes must be >= 1, got {self.episodes}")
        if self.judge_max_tokens < 1:
            raise OmarError(f"judge_max_tokens must be >= 1, got {self.judge_max_tokens}")
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

    def verdict(self) -> str:
        """The answer first: did the tested side beat the opponent on reward, by how much, over how many games."""
        overall = self.comparison("reward")
        tested, opponent = self.config.get("adapter"), self.config.get("opponent_label")
        if overall is None or overall.difference is None:
            return f"No paired games finished: no answer ({self.failed_games} of {len(self.games)} games failed)."
        d = overall.difference
        level = f"{self.config.get('confidence', 0.95):.0%}"
        if d.method != "none" and d.low > 0:
            answer = f"Yes: {tested} beat {opponent}"
        elif d.method != "none" and d.high < 0:
            answer = f"No: {tested} lost to {opponent}"
        else:
            answer = f"Not shown: {tested} and {opponent} are not told apart"
        return (
            f"{answer}, by {d.mean:+.3f} reward per game ({level} interval [{d.low:+.3f}, {d.high:+.3f}]) over "
            f"{d.n} scenario seeds, {len(self.games)} games."
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(replace(self, episodes=[]))
        del data["episodes"]
        return data


# ---- playing the games --------------------------------------------------------------------------------------


def _policies(config: EvalConfig) -> tuple[ChatPolicy, ChatPolicy, str, str | None]:
    """The players' chat model (base; adapters seated per game), the judge's, and the two sides' adapters."""
    from langgraph_omar.serving.engine import SharedPolicy

    engine = SharedPolicy.get(config.model, config.device)
    tested = engine.ensure_adapter(config.adapter)  # a bad adapter fails here, before any game
    opponent = engine.ensure_adapter(config.opponent) if config.opponent else None
    players = ChatPolicy(
        model=config.model,
        device=config.device,
        temperature=config.temperature,
        top_p=config.top_p,
        max_tokens=config.max_tokens,
    )
    judge = served_judge(config.model, config.device, config.judge_max_tokens)
    return players, judge, tested, opponent


def learn_roles(env: Environment, graph: Any, seed: int) -> tuple[str, ...]:
    """The roles of a graph that does not declare them: those rewarded in one base-model episode."""
    played, _ = asyncio.run(
        arun_episodes(
            graph,
            [env.sample_input(seed)],
            [episode_metadata(seed, episode_id=f"roles-{seed}")],
            progress=False,
            recursion_limit=env.recursion_limit,
            configurable=[env.sample_config(seed)],
        )
    )
    episode = played[0]
    if episode.status != "ok":
        raise OmarError(f"{env.name}: the first episode (seed {seed}) failed: {episode.error}")
    if not episode.rewards:
        raise OmarError(f"{env.name}: the final state has no `rewards` ({{role: float}}): nothing to compare")
    unrewarded = sorted({t.role for t in episode.turns} - set(episode.rewards) - {JUDGE_ROLE})
    if unrewarded:
        warnings.warn(
            f"{env.name}: roles {unrewarded} acted but got no reward", ContractWarning, stacklevel=2
        )
    return tuple(sorted(episode.rewards))


def plan_games(config: EvalConfig, env: Environment, roles: tuple[str, ...]) -> list[Game]:
    """One game per (scenario seed, seat): the tested side in that seat, the opponent everywhere else."""
    games = []
    for seed in config.seeds():
        seating = env.seating(seed, roles)
        for seat in env.seats(roles):
            sides = {role: TESTED if role_seat == seat else OPPONENT for role, role_seat in seating.items()}
            games.append(Game(seed, seat, f"eval-{env.name}-s{seed}-{seat}", sides, seating))
    return games


def check_tested_acted(
    env_name: str, label: str, tested: str, games: list[Game], episodes: list[Episode]
) -> None:
    """Raise OmarError naming the seat (and its roles) where the tested adapter never played a turn over
    the finished games that seat it there: such games compare the opponent with itself, not a result."""
    for seat in dict.fromkeys(g.tested_seat for g in games):
        played = [(g, e) for g, e in zip(games, episodes, strict=True) if g.tested_seat == seat]
        finished = [(g, e) for g, e in played if e.status == "ok"]
        if not finished or any(
            t.adapter == tested and g.seating.get(t.role) == seat for g, e in finished for t in e.turns
        ):
            continue
        roles = sorted(r for r, s in finished[0][0].seating.items() if s == seat)
        acted = sorted({t.role for _, e in finished for t in e.turns})
        raise OmarError(
            f"{env_name}: the tested adapter {label} never acted in seat {seat!r} (role(s) {roles}) in "
            f"{len(finished)} finished game(s); the roles that acted: {acted}. A call's role is its node's "
            "metadata={'role': ...}, else its agent's name, else its node's name (docs/environments.md)"
        )


def run_arena(config: EvalConfig, progress: bool = True, env: Environment | None = None) -> EvalResult:
    """Play every (seed, seat) game of `config` and compute the statistics."""
    env = env or load_environment(config.env, config.env_options)
    players, judge, tested, opponent = _policies(config)
    graph = env.build_graph(players, judge=judge)
    roles = env.roles or learn_roles(env, graph, config.seed)
    games = plan_games(config, env, roles)
    adapters = {TESTED: tested, OPPONENT: opponent}
    metadata = [
        episode_metadata(  # both seatings of a seed draw the same numbers for the same prompt
            game.seed,
            env=env.name,
            episode_id=game.episode_id,
            adapter_by_role={role: adapters[side] for role, side in game.sides.items()},
        )
        for game in games
    ]
    episodes, _ = asyncio.run(
        arun_episodes(
            graph,
            [env.sample_input(game.seed) for game in games],
            metadata,
            max_concurrency=config.max_concurrency,
            progress=progress,
            recursion_limit=env.recursion_limit,
            description="eval games",
            configurable=[env.sample_config(game.seed) for game in games],
        )
    )
    for game, episode in zip(games, episodes, strict=True):
        episode.metadata["arena"] = {
            "tested_seat": game.tested_seat,
            "sides": game.sides,
            "seating": game.seating,
        }
        game.status, game.error = episode.status, episode.error
        if episode.status == "ok":
            game.seat_values = env.seat_values(episode, game.seating)
            game.game_values = env.game_values(episode)
    check_tested_acted(env.name, str(config.adapter), tested, games, episodes)
    seats = env.seats(roles)
    kinds, rates = env.metric_kinds(), env.rate_metrics()
    return EvalResult(
        config={**asdict(config), "opponent_label": config.opponent or "base"},
        seats=list(seats),
        comparisons=compare_seats(games, seats, kinds, rates, config.confidence),
        game_metrics=summarize_games(games, seats, kinds, rates, config.confidence),
        games=games,
        metric_help=env.metric_help(),
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

    result = evaluate("negotiation", "runs/neg/adapter", episodes=16, env_options={"kind": "split"})
    print(result.headline())
    result.comparison("reward", "buyer").difference      # Interval(mean, low, high, n, method)
    """
    return run_arena(EvalConfig(env, adapter, opponent, episodes, seed, **options), progress=progress)
