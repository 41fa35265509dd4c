from __future__ import annotations

import json
from pathlib import Path

import pytest

from langgraph_omar.envs.environment import JUDGE, OUTCOME
from langgraph_omar.eval.arena import OPPONENT, TESTED, EvalResult
from langgraph_omar.eval.report import plot_seats, plot_training, render_html, write_report
from langgraph_omar.eval.stats import ALL_SEATS, Comparison, Game, GameMetric, Interval
from langgraph_omar.trajectory import Episode, Turn


def _turn(role: str, text: str, adapter: str | None) -> Turn:
    return Turn(
        role=role, node=role, text=text, prompt_ids=[1], completion_ids=[2], logprobs=[-0.5], adapter=adapter
    )


def _result(with_judge: bool = True) -> EvalResult:
    interval = Interval(0.5, 0.25, 0.75, 4, "t")
    comparisons = [
        Comparison("reward", OUTCOME, seat, interval, Interval(0.4, 0.2, 0.6, 4, "t"), interval, 4)
        for seat in ("buyer", "seller", ALL_SEATS)
    ]
    if with_judge:
        comparisons.append(Comparison("judge_goal", JUDGE, ALL_SEATS, interval, interval, None, 0))
    games, episodes = [], []
    for seat in ("seller", "buyer"):  # out of seat order: the report sorts by seed, then seat
        other = "buyer" if seat == "seller" else "seller"
        games.append(
            Game(
                3, seat, f"e-{seat}", {seat: TESTED, other: OPPONENT}, {"buyer": "buyer", "seller": "seller"}
            )
        )
        episodes.append(
            Episode(
                f"e-{seat}",
                turns=[
                    _turn("buyer", "OFFER 10 <script>alert(1)</script>", None),
                    _turn("seller", "ACCEPT", "a"),
                ],
                rewards={"buyer": 0.6, "seller": 0.4},
            )
        )
    games.append(
        Game(4, "buyer", "e-failed", {"buyer": TESTED, "seller": OPPONENT}, {}, status="failed", error="boom")
    )
    episodes.append(Episode("e-failed", status="failed", error="boom"))
    return EvalResult(
        config={
            "env": "negotiation",
            "adapter": "runs/a/adapter",
            "opponent_label": "base",
            "confidence": 0.95,
        },
        seats=["buyer", "seller"],
        comparisons=comparisons,
        game_metrics=[GameMetric("agreement", OUTCOME, ALL_SEATS, Interval(0.5, 0.1, 0.9, 4, "wilson"))],
        games=games,
        metric_help={"reward": "surplus share"},
        episodes=episodes,
    )


def test_html_is_self_contained_escaped_and_puts_outcomes_first() -> None:
    page = render_html(_result(), {"seats": plot_seats(_result())})
    assert page.index("<h2>Outcome metrics</h2>") < page.index("<h2>Per-game metrics</h2>")
    assert page.index("<h2>Per-game metrics</h2>") < page.index("<h2>Judge scores</h2>")
    assert "overrate" in page  # the judge table carries its warning
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count("data:image/png;base64,") == 1
    assert 'src="http' not in page and "href=" not in page
    assert "boom" in page  # failed games are listed, not hidden
    # transcripts in seed order, then seat order: the buyer seating (tested buyer) comes first
    assert page.index("tested model in seat <b>buyer</b>") < page.index("tested model in seat <b>seller</b>")
    assert "buyer (tested: runs/a/adapter)" in page and "seller (opponent: base)" in page


def test_html_without_judge_scores_has_no_judge_section() -> None:
    page = render_html(_result(with_judge=False), {})
    assert "Judge scores" not in page and "Outcome metrics" in page


def test_plots_are_png() -> None:
    rows = [{"iteration": i, "reward_mean": i / 10, "reward_buyer": i / 5, "loss": 1.0} for i in range(4)]
    assert plot_training(rows).startswith(b"\x89PNG")
    assert plot_seats(_result()).startswith(b"\x89PNG")


def test_write_report_writes_every_file_and_leaves_no_temporaries(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"iteration": 0, "reward_mean": 0.5}) + "\n")
    out = tmp_path / "out"
    paths = write_report(_result(), out, run_dir=run)
    assert set(paths) == {"eval.json", "episodes", "seats plot", "training plot", "report"}
    assert all(path.exists() for path in paths.values())
    data = json.loads((out / "eval.json").read_text())
    assert data["comparisons"][0]["metric"] == "reward" and "episodes" not in data
    assert data["comparisons"][-1]["difference"] is None
    leftovers = [
        p for p in out.iterdir() if p.name.startswith(".") and p.suffix != ".lock"
    ]  # lock: trajectory_io's
    assert not leftovers
    # writing again replaces the files in place
    write_report(_result(with_judge=False), out)
    assert "Judge scores" not in (out / "report.html").read_text()


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    import os

    from langgraph_omar.atomic import write_atomic

    mask = os.umask(0o022)
    os.umask(mask)
    path = write_atomic(tmp_path / "x.txt", "hello")
    assert path.read_text() == "hello"
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_the_report_leads_with_the_answer_then_the_curve_then_before_and_after() -> None:
    result = _result()
    assert result.verdict() == (
        "Yes: runs/a/adapter beat base, by +0.500 reward per game (95% interval [+0.250, +0.750]) over 4 "
        "scenario seeds, 3 games."
    )
    before = Episode("b", turns=[_turn("buyer", "hello there", None)], metadata={"scenario_id": "neg-7"})
    after = Episode("a", turns=[_turn("buyer", "OFFER 90", "a")], metadata={"scenario_id": "neg-7"})
    curve = plot_training([{"iteration": i, "reward_mean": i / 10} for i in range(3)])
    page = render_html(
        result,
        {"the learning curve: reward by iteration": curve, "seats": b"png"},
        before_after=[(before, after)],
    )
    answer = page.index("Yes: runs/a/adapter beat base")
    assert answer < page.index("the learning curve") < page.index("before training (base model)")
    assert page.index("hello there") < page.index("OFFER 90") < page.index("<h2>Outcome metrics</h2>")


@pytest.mark.parametrize(
    ("interval", "start"),
    [(Interval(-0.3, -0.5, -0.1, 8, "t"), "No: "), (Interval(0.1, -0.2, 0.4, 8, "t"), "Not shown: ")],
)
def test_the_verdict_says_no_or_not_shown(interval: Interval, start: str) -> None:
    result = _result()
    result.comparisons = [Comparison("reward", OUTCOME, ALL_SEATS, interval, interval, interval, 8)]
    assert result.verdict().startswith(start)


def test_a_transcript_marks_turns_of_a_role_no_side_plays_by_the_seats_not_by_the_role_name() -> None:
    """A judge or narrator is recognised by having no seat, whatever its role is called (issue 27)."""
    result = _result()
    result.episodes[0].turns.append(_turn("moderator", "The deal is fair.", None))
    page = render_html(result, {})
    assert '<div class="turn unseated"><b>moderator (no seat)</b>' in page
    assert "moderator (opponent: base)" not in page  # not shown as the opponent's turn
