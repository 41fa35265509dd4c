from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from adapter_helpers import save_random_adapter

import langgraph_omar.serving.decoding as decoding
from langgraph_omar.cli import main
from langgraph_omar.envs.environment import JUDGE, OUTCOME
from langgraph_omar.envs.registry import load_environment
from langgraph_omar.envs.werewolf.config import WEREWOLF
from langgraph_omar.envs.werewolf.rules import new_game
from langgraph_omar.errors import OmarError
from langgraph_omar.eval.arena import OPPONENT, TESTED, EvalConfig, evaluate
from langgraph_omar.eval.stats import (
    ALL_SEATS,
    Game,
    compare_seats,
    mean_by_seed,
    mean_interval,
    paired_differences,
    summarize,
    summarize_games,
    t_central_mass,
    t_quantile,
    wilson_interval,
)
from langgraph_omar.serving.engine import SharedPolicy
from langgraph_omar.testing import tiny_model, tiny_tokenizer
from langgraph_omar.trajectory import Episode

# ---- intervals --------------------------------------------------------------------------------------------


def test_t_quantile_matches_closed_forms_and_tables() -> None:
    # df=1 is Cauchy: P(|T| < t) = 2 atan(t) / pi = 0.95  =>  t = tan(0.475 pi) = 12.7062
    assert t_quantile(0.95, 1) == pytest.approx(math.tan(0.475 * math.pi), abs=1e-6)
    # df=2: P(|T| < t) = t / sqrt(2 + t^2) = c  =>  t = sqrt(2 c^2 / (1 - c^2)) = 4.30265 for c = 0.95
    assert t_quantile(0.95, 2) == pytest.approx(math.sqrt(2 * 0.95**2 / (1 - 0.95**2)), abs=1e-6)
    # printed t tables (97.5% points): df 3 -> 3.182, 10 -> 2.228, 30 -> 2.042; df 5 at 99% -> 4.032
    assert t_quantile(0.95, 3) == pytest.approx(3.1824, abs=1e-4)
    assert t_quantile(0.95, 10) == pytest.approx(2.2281, abs=1e-4)
    assert t_quantile(0.95, 30) == pytest.approx(2.0423, abs=1e-4)
    assert t_quantile(0.98, 5) == pytest.approx(3.3649, abs=1e-4)
    assert t_quantile(0.95, 5000) == pytest.approx(1.96, abs=1e-3)  # normal beyond 1000 df


def test_t_central_mass_odd_df_closed_form() -> None:
    # df=3: P(|T| < t) = 2/pi (atan(t/sqrt3) + (t/sqrt3) / (1 + t^2/3)); at t = sqrt3: 2/pi (pi/4 + 1/2)
    assert t_central_mass(math.sqrt(3), 3) == pytest.approx(2 / math.pi * (math.pi / 4 + 0.5), abs=1e-12)


def test_mean_interval_hand_computed() -> None:
    # [1, 2, 3, 4]: mean 2.5, s^2 = (2.25 + .25 + .25 + 2.25) / 3 = 5/3, se = sqrt(5/12) = 0.645497,
    # t(0.95, 3) = 3.182446 -> half width 2.054260
    interval = mean_interval([1.0, 2.0, 3.0, 4.0])
    assert interval is not None and interval.method == "t" and interval.n == 4
    assert interval.mean == 2.5
    assert interval.low == pytest.approx(2.5 - 2.054260, abs=1e-5)
    assert interval.high == pytest.approx(2.5 + 2.054260, abs=1e-5)
    single = mean_interval([0.3])
    assert single is not None and single.method == "none" and single.low == single.high == 0.3
    assert mean_interval([]) is None


def test_wilson_interval_hand_computed() -> None:
    # 8 of 10, z = 1.959964: centre (0.8 + z^2/20) / (1 + z^2/10) = 0.716740,
    # half z sqrt(0.016 + z^2/400) / (1 + z^2/10) = 0.226576 -> [0.490164, 0.943316]
    interval = wilson_interval(8, 10)
    assert interval is not None and interval.mean == 0.8
    assert interval.low == pytest.approx(0.490164, abs=1e-5)
    assert interval.high == pytest.approx(0.943316, abs=1e-5)
    none_won = wilson_interval(0, 4)  # all equal: still a real interval, unlike mean +- t se
    assert none_won is not None and none_won.low == 0.0 and none_won.high > 0.3


def test_summarize_rates_need_zero_one_values() -> None:
    assert summarize([1.0, 0.0], rate=True).method == "wilson"  # type: ignore[union-attr]
    assert summarize([1.0, 0.0], rate=False).method == "t"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="0/1 values"):
        summarize([0.5], rate=True)


# ---- paired comparisons over hand-made games ----------------------------------------------------------------


def _game(seed: int, tested: str, a: float, b: float, status: str = "ok") -> Game:
    sides = {"A": TESTED if tested == "A" else OPPONENT, "B": TESTED if tested == "B" else OPPONENT}
    return Game(
        seed,
        tested,
        f"g{seed}{tested}",
        sides,
        {"A": "A", "B": "B"},
        status=status,
        seat_values={"A": {"reward": a}, "B": {"reward": b}} if status == "ok" else {},
        game_values={"agreement": 1.0 if a + b > 0 else 0.0} if status == "ok" else {},
    )


def test_compare_seats_pairs_by_seed() -> None:
    games = [
        _game(0, "A", 0.6, 0.4),
        _game(0, "B", 0.5, 0.5),  # d_A(0) = 0.6 - 0.5 = 0.1, d_B(0) = 0.5 - 0.4 = 0.1 -> d(0) = 0.1
        _game(1, "A", 0.2, 0.8),
        _game(1, "B", 0.4, 0.6),  # d_A(1) = 0.2 - 0.4 = -0.2, d_B(1) = 0.6 - 0.8 = -0.2 -> d(1) = -0.2
        _game(2, "A", 1.0, 0.0),
        _game(2, "B", 0.3, 0.7),  # d_A(2) = 1.0 - 0.3 = 0.7, d_B(2) = 0.7 - 0.0 = 0.7 -> d(2) = 0.7
        _game(3, "A", 0, 0, status="failed"),
        _game(3, "B", 0.1, 0.9),  # seed 3 has no pair: it counts for B's tested mean only
    ]
    rows = {c.seat: c for c in compare_seats(games, ["A", "B"], {"reward": OUTCOME})}
    assert list(rows) == ["A", "B", ALL_SEATS]
    seat_a = rows["A"]
    assert seat_a.tested is not None and seat_a.tested.mean == pytest.approx(0.6)  # (0.6 + 0.2 + 1.0) / 3
    assert seat_a.opponent is not None and seat_a.opponent.mean == pytest.approx(0.325)  # (.5+.4+.3+.1)/4
    assert seat_a.pairs == 3 and seat_a.difference is not None
    assert seat_a.difference.mean == pytest.approx(0.2)  # (0.1 - 0.2 + 0.7) / 3
    assert rows["B"].tested is not None and rows["B"].tested.mean == pytest.approx(
        (0.5 + 0.6 + 0.7 + 0.9) / 4
    )
    overall = rows[ALL_SEATS].difference
    # d = [0.1, -0.2, 0.7]: mean 0.2, s^2 = (0.01 + 0.16 + 0.25) / 2 = 0.21, se = sqrt(0.07) = 0.264575,
    # t(0.95, 2) = 4.302653 -> half width 1.138378
    assert overall is not None and overall.n == 3
    assert overall.mean == pytest.approx(0.2)
    assert overall.low == pytest.approx(0.2 - 1.138378, abs=1e-5)
    assert overall.high == pytest.approx(0.2 + 1.138378, abs=1e-5)


def test_paired_differences_are_the_overall_comparisons_seeds() -> None:
    games = [
        _game(0, "A", 0.6, 0.4),
        _game(0, "B", 0.5, 0.5),
        _game(1, "A", 0.2, 0.8),
        _game(1, "B", 0.4, 0.6),
        _game(3, "A", 0, 0, status="failed"),
        _game(3, "B", 0.1, 0.9),
    ]
    assert paired_differences(games, ["A", "B"], "reward") == pytest.approx({0: 0.1, 1: -0.2})
    assert paired_differences(games, ["A", "B"], "no such metric") == {}
    assert mean_by_seed([{0: 1.0, 1: 2.0}, {1: 4.0, 2: 0.0}]) == {1: 3.0}  # seeds both tables have


def test_metric_order_puts_outcomes_before_judge_scores() -> None:
    game = _game(0, "A", 0.5, 0.5)
    game.seat_values["A"]["judge_goal"] = 7.0
    kinds = {"judge_goal": JUDGE, "reward": OUTCOME}
    metrics = [c.metric for c in compare_seats([game], ["A", "B"], kinds)]
    assert metrics.index("reward") < metrics.index("judge_goal")


def test_summarize_games_by_tested_seat() -> None:
    games = [_game(0, "A", 0.6, 0.4), _game(0, "B", 0.0, 0.0), _game(1, "A", 0.5, 0.5)]
    rows = {
        r.seat: r for r in summarize_games(games, ["A", "B"], {"agreement": OUTCOME}, rates={"agreement"})
    }
    seat_a, seat_b, overall = rows["A"].value, rows["B"].value, rows[ALL_SEATS].value
    assert seat_a is not None and seat_a.mean == 1.0 and seat_a.method == "wilson"
    assert seat_b is not None and seat_b.mean == 0.0
    assert overall is not None and overall.mean == pytest.approx(2 / 3)


# ---- arenas -------------------------------------------------------------------------------------------------


def test_werewolf_seats_are_teams_of_game_roles() -> None:
    arena = load_environment("werewolf")
    assert arena.roles == ("Villager", "Werewolf", "Seer", "Witch")  # classic_6, in order of first seat
    assert arena.seats(arena.roles) == ("Villagers", "Werewolves")
    for seed in (0, 1, 2):
        seating = arena.seating(seed, arena.roles)
        assert seating == {
            "Villager": "Villagers",
            "Werewolf": "Werewolves",
            "Seer": "Villagers",
            "Witch": "Villagers",
        }
        # whoever the seed deals a role to sits with that role's team
        dealt = new_game(arena.game, seed)["roles"]
        wolves = {p for p, role in dealt.items() if seating[role] == "Werewolves"}
        assert wolves == {p for p, role in dealt.items() if role == WEREWOLF}


def test_sotopia_seat_values_read_rewards_and_judge_dimensions() -> None:
    arena = load_environment("sotopia")
    episode = Episode(
        "e",
        rewards={"agent_1": 0.7},  # agent_2's judge call failed: no reward, no dimensions
        reward_dimensions={"agent_1": {"goal": 7.0, "believability": 9.0}},
        metadata={"metrics": {"turns": 6, "judge_failures": ["agent_2"]}},
    )
    values = arena.seat_values(episode, arena.seating(0, arena.roles))
    assert values == {
        "agent_1": {"reward": 0.7, "judge_goal": 7.0, "judge_believability": 9.0, "judge_overall": 8.0}
    }
    assert arena.game_values(episode) == {"turns": 6.0, "judge_failures": 1.0}
    assert arena.metric_kinds()["reward"] == JUDGE


def test_werewolf_seat_values_win_and_fallback_share_by_team() -> None:
    arena = load_environment("werewolf")
    metrics = {
        "win_rate": {"Villagers": 0.0, "Werewolves": 1.0},
        "moves_by_role": {"Villager": 4, "Werewolf": 4, "Seer": 2, "Witch": 2},
        "fallbacks_by_role": {"Villager": 3, "Werewolf": 1, "Seer": 0, "Witch": 0},
    }
    episode = Episode("e", rewards={"Werewolf": 1.0, "Villager": -1.0}, metadata={"metrics": metrics})
    values = arena.seat_values(episode, arena.seating(0, arena.roles))
    assert values["Werewolves"] == {"reward": 1.0, "win": 1.0, "fallback_share": 0.25}
    villagers = {"reward": -1.0, "win": 0.0, "fallback_share": 3 / 8}  # villager, seer and witch together
    assert values["Villagers"] == villagers


def test_unknown_environment_is_one_line_error() -> None:
    with pytest.raises(OmarError, match="expected one of"):
        load_environment("chess")
    with pytest.raises(OmarError, match="negotiation has no option 'colour'"):
        load_environment("negotiation", {"colour": "red"})
    with pytest.raises(OmarError, match="kind must be one of"):
        load_environment("negotiation", {"kind": "auction"})
    with pytest.raises(OmarError, match="episodes must be >= 1"):
        EvalConfig("negotiation", "a", episodes=0)


# ---- end to end on the tiny model ---------------------------------------------------------------------------


@pytest.fixture
def engine() -> SharedPolicy:
    policy = SharedPolicy("tiny-eval", tiny_model(0), tiny_tokenizer(), max_wait_ms=5)
    SharedPolicy.register(policy)
    return policy


@pytest.fixture
def adapters(tmp_path: Path) -> tuple[Path, Path]:
    return (
        save_random_adapter(tiny_model(0), tmp_path / "trained", seed=1),
        save_random_adapter(tiny_model(0), tmp_path / "other", seed=2),
    )


SHORT = {"max_turns": 2}


def test_evaluate_negotiation_rotates_seats_in_shared_batches(
    adapters: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # four games at once, and a batch closes when all four calls of a turn are in: both sides share batches
    engine = SharedPolicy("tiny-eval4", tiny_model(0), tiny_tokenizer(), max_batch_size=4, max_wait_ms=2000)
    SharedPolicy.register(engine)
    batches: list[list[str | None]] = []
    real_forward = decoding.next_logits

    def recording_forward(
        model: Any, ids: Any, mask: Any, positions: Any, cache: Any, adapters: Any, *rest: Any
    ) -> Any:
        batches.append(list(adapters))
        return real_forward(model, ids, mask, positions, cache, adapters, *rest)

    monkeypatch.setattr(decoding, "next_logits", recording_forward)
    trained, _ = adapters
    result = evaluate(
        "negotiation", str(trained), episodes=2, seed=5, model="tiny-eval4", max_tokens=3, env_options=SHORT
    )
    assert [(g.seed, g.tested_seat) for g in result.games] == [
        (5, "buyer"),
        (5, "seller"),
        (6, "buyer"),
        (6, "seller"),
    ]
    tested_name = engine.ensure_adapter(str(trained))
    for game, episode in zip(result.games, result.episodes, strict=True):
        assert game.status == "ok", game.error
        assert episode.metadata["seed"] == game.seed
        assert game.sides[game.tested_seat] == TESTED
        for turn in episode.turns:  # who played each turn is recorded token-for-token by the engine
            expected = tested_name if game.sides[turn.role] == TESTED else None
            assert turn.adapter == expected
    # the same scenario for both seatings of a seed
    assert result.episodes[0].metadata["scenario_id"] == result.episodes[1].metadata["scenario_id"]
    assert any(tested_name in batch and None in batch for batch in batches)
    reward = result.comparison("reward", ALL_SEATS)
    assert reward is not None and reward.pairs == 2 and reward.kind == OUTCOME
    assert "tested - opponent" in result.headline()
    json.dumps(result.to_dict(), default=repr)  # eval.json material


def test_evaluate_against_another_adapter(engine: SharedPolicy, adapters: tuple[Path, Path]) -> None:
    trained, other = adapters
    result = evaluate(
        "negotiation",
        str(trained),
        opponent=str(other),
        episodes=1,
        model="tiny-eval",
        max_tokens=2,
        env_options=SHORT,
    )
    other_name = engine.ensure_adapter(str(other))
    opponent_turns = [
        t
        for g, e in zip(result.games, result.episodes, strict=True)
        for t in e.turns
        if g.sides[t.role] == OPPONENT
    ]
    assert opponent_turns and all(t.adapter == other_name for t in opponent_turns)
    assert result.config["opponent_label"] == str(other)


def test_both_seatings_of_a_seed_draw_the_same_numbers(
    engine: SharedPolicy, adapters: tuple[Path, Path]
) -> None:
    # tested against itself: the two seatings of a seed are the same game, so their texts are equal
    trained, _ = adapters
    result = evaluate(
        "negotiation",
        str(trained),
        str(trained),
        episodes=1,
        model="tiny-eval",
        max_tokens=3,
        env_options=SHORT,
    )
    first, second = ([t.text for t in e.turns] for e in result.episodes)
    assert first == second


def test_bad_adapter_fails_before_any_game(engine: SharedPolicy, tmp_path: Path) -> None:
    with pytest.raises(OmarError, match="neither a loaded adapter") as info:
        evaluate("negotiation", str(tmp_path / "missing"), episodes=1, model="tiny-eval")
    assert "\n" not in str(info.value)


def test_cli_eval_writes_json_plots_and_report(
    engine: SharedPolicy, adapters: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trained, _ = adapters
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"iteration": i, "reward_mean": 0.1 * i, "reward_buyer": 0.2 * i} for i in range(3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "eval"
    argv = ["eval", "negotiation", "--adapter", str(trained), "--episodes", "1", "--model", "tiny-eval"]
    argv += ["--max-tokens", "2", "--max-turns", "2", "--out", str(out), "--run", str(run)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "tested - opponent" in printed and str(out / "report.html") in printed
    data = json.loads((out / "eval.json").read_text())
    assert data["config"]["env"] == "negotiation" and len(data["games"]) == 2
    assert {c["seat"] for c in data["comparisons"]} == {"buyer", "seller", ALL_SEATS}
    for name in ("seats.png", "training.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "http" not in page
    assert page.count("<details>") == 2  # both seatings' transcripts
    assert (out / "episodes.jsonl").exists()


def test_cli_eval_missing_run_metrics_is_one_line_error(
    adapters: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["eval", "negotiation", "--adapter", str(adapters[0]), "--out", str(tmp_path / "o")]
    assert main([*argv, "--run", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().startswith("omar eval: error: --run")


GHOST_GRAPH = """
from typing import TypedDict
from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    rewards: dict


def sample_input(seed):
    return {}


def build(model):
    async def asker(state):
        await model.ainvoke("ask")
        return {"rewards": {"asker": 1.0, "ghost": 0.0}}  # "ghost" is rewarded but never calls the model

    graph = StateGraph(State)
    graph.add_node("asker", asker)
    graph.add_edge(START, "asker")
    graph.add_edge("asker", END)
    return graph.compile()
"""


def test_cli_eval_exits_non_zero_naming_a_seat_the_tested_adapter_never_acted_in(
    engine: SharedPolicy,
    adapters: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "ghost_seat.py").write_text(GHOST_GRAPH)
    argv = ["eval", "ghost_seat:build", "--adapter", str(adapters[0]), "--episodes", "2", "--model"]
    assert main([*argv, "tiny-eval", "--max-tokens", "2", "--out", "eval"]) == 2
    err = capsys.readouterr().err
    assert "never acted in seat 'ghost' (role(s) ['ghost']) in 2 finished game(s)" in err
    assert "the roles that acted: ['asker']" in err


METRICS_GRAPH = """
from typing import TypedDict
from langgraph.graph import END, START, StateGraph


class State(TypedDict, total=False):
    rewards: dict
    metrics: dict


def sample_input(seed):
    return {}


def build(model):
    async def asker(state):
        await model.ainvoke("ask")
        return {"rewards": {"asker": 1.0}, "metrics": {"bookings": 2, "closed": True, "note": "text"}}

    graph = StateGraph(State)
    graph.add_node("asker", asker)
    graph.add_edge(START, "asker")
    graph.add_edge("asker", END)
    return graph.compile()
"""


def test_the_final_states_metrics_of_a_graph_of_ones_own_reach_the_report(
    engine: SharedPolicy, adapters: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "metrics_graph.py").write_text(METRICS_GRAPH)
    argv = ["eval", "metrics_graph:build", "--adapter", str(adapters[0]), "--episodes", "2", "--model"]
    assert main([*argv, "tiny-eval", "--max-tokens", "2", "--out", "eval"]) == 0
    rows = json.loads((tmp_path / "eval" / "eval.json").read_text())["game_metrics"]
    overall = {r["metric"]: r["value"]["mean"] for r in rows if r["seat"] == ALL_SEATS}
    assert overall == {"bookings": 2.0, "closed": 1.0}  # numbers and booleans; text is not a metric
    assert "bookings" in (tmp_path / "eval" / "report.html").read_text()
