"""The evaluation report: eval.json, PNG plots (matplotlib, Agg) and one self-contained report.html.

report.html embeds its images as base64 and needs no server, script or network: open it from disk.
Outcome metrics come first; judge scores follow in their own table, marked as such, never alone.
Every file is written atomically (temporary file, flush, fsync, rename).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

from langgraph_omar.atomic import write_atomic

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot is imported)

from langgraph_omar.envs.environment import JUDGE, OUTCOME  # noqa: E402
from langgraph_omar.eval.arena import OPPONENT, TESTED, EvalResult  # noqa: E402
from langgraph_omar.eval.stats import ALL_SEATS, Comparison, Game, Interval  # noqa: E402
from langgraph_omar.run_folder import RunFolder  # noqa: E402
from langgraph_omar.trajectory import Episode  # noqa: E402

REWARD_KEYS = ("reward_mean",)  # the overall reward line of a training run's metrics
UNSEATED = "unseated"  # a transcript turn of a role no side plays (a judge, a narrator)


# ---- plots --------------------------------------------------------------------------------------------------


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _error_bar(interval: Interval | None) -> tuple[float, float, float]:
    """(mean, distance down, distance up) for matplotlib; NaN mean for a missing interval."""
    if interval is None:
        return math.nan, 0.0, 0.0
    return interval.mean, interval.mean - interval.low, interval.high - interval.mean


def plot_training(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """Reward by iteration: the overall mean reward and each role's (keys `reward_<role>`); beside it, when
    the run counted them, the share of degenerate turns (empty, cut, off-format, repeated)."""
    degenerate = [(r["iteration"], r["degenerate_fraction"]) for r in rows if "degenerate_fraction" in r]
    figure, axes = plt.subplots(
        1, 2 if degenerate else 1, figsize=(11 if degenerate else 7, 3.6), squeeze=False
    )
    axis = axes[0][0]
    keys = [k for k in REWARD_KEYS if any(k in row for row in rows)]
    keys += sorted({k for row in rows for k in row if k.startswith("reward_") and k not in REWARD_KEYS})
    for key in keys:
        points = [(row["iteration"], row[key]) for row in rows if isinstance(row.get(key), int | float)]
        if points:
            xs, ys = zip(*points, strict=True)
            width = 2.4 if key in REWARD_KEYS else 1.2
            axis.plot(xs, ys, marker="o", markersize=3, linewidth=width, label=key)
    axis.set_xlabel("iteration")
    axis.set_ylabel("mean reward")
    axis.set_title("training: reward by iteration")
    axis.grid(alpha=0.3)
    if keys:
        axis.legend(fontsize=8, loc="best")
    if degenerate:
        xs, ys = zip(*degenerate, strict=True)
        side = axes[0][1]
        side.plot(xs, ys, marker="o", markersize=3, color="tab:red")
        side.set_ylim(0, 1.05)
        side.set_xlabel("iteration")
        side.set_title("share of degenerate turns")
        side.grid(alpha=0.3)
    return _png(figure)


def _main_metrics(result: EvalResult) -> list[str]:
    """The seat metrics worth a plot: outcome metrics first, then the judge's reward; at most two."""
    ordered = list(dict.fromkeys(c.metric for c in result.comparisons))
    outcome = [m for m in ordered if any(c.kind == OUTCOME for c in result.comparisons if c.metric == m)]
    judge = [m for m in ordered if m == "reward" and m not in outcome]
    return (outcome + judge)[:2]


def plot_seats(result: EvalResult) -> bytes:
    """Per main metric: each side's mean by seat with error bars; last panel: the paired differences."""
    metrics = _main_metrics(result)
    figure, axes = plt.subplots(1, len(metrics) + 1, figsize=(4.2 * (len(metrics) + 1), 3.6), squeeze=False)
    seats = [*result.seats, ALL_SEATS]
    labels = {TESTED: str(result.config.get("adapter")), OPPONENT: str(result.config.get("opponent_label"))}
    for axis, metric in zip(axes[0], metrics, strict=False):
        rows = {c.seat: c for c in result.comparisons if c.metric == metric}
        for offset, side in ((-0.2, TESTED), (0.2, OPPONENT)):
            bars = [_error_bar(getattr(rows[s], side) if s in rows else None) for s in seats]
            axis.bar(
                [i + offset for i in range(len(seats))],
                [b[0] for b in bars],
                width=0.4,
                yerr=[[b[1] for b in bars], [b[2] for b in bars]],
                capsize=3,
                label=f"{side}: {Path(labels[side]).name or labels[side]}",
            )
        kind = next(iter(rows.values())).kind if rows else OUTCOME
        axis.set_title(f"{metric} by seat" + (" (judge)" if kind == JUDGE else ""))
        axis.set_xticks(range(len(seats)), seats, rotation=15)
        axis.grid(axis="y", alpha=0.3)
        axis.legend(fontsize=7)
    difference_axis = axes[0][-1]
    for index, metric in enumerate(metrics):
        rows = {c.seat: c for c in result.comparisons if c.metric == metric}
        bars = [_error_bar(rows[s].difference if s in rows else None) for s in seats]
        step = 0.8 / max(len(metrics), 1)
        difference_axis.errorbar(
            [i - 0.4 + step * (index + 0.5) for i in range(len(seats))],
            [b[0] for b in bars],
            yerr=[[b[1] for b in bars], [b[2] for b in bars]],
            fmt="o",
            capsize=3,
            label=metric,
        )
    difference_axis.axhline(0.0, color="grey", linewidth=1)
    difference_axis.set_xticks(range(len(seats)), seats, rotation=15)
    confidence = float(result.config.get("confidence", 0.95))
    difference_axis.set_title(f"tested - opponent (paired, {confidence:.0%} CI)")
    difference_axis.grid(axis="y", alpha=0.3)
    if metrics:
        difference_axis.legend(fontsize=7)
    return _png(figure)


# ---- HTML ---------------------------------------------------------------------------------------------------

TRAINING_PLOT = "the learning curve: reward by iteration"
_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.4em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}.note{color:#555;font-size:.92em}
.turn{margin:.2em 0;padding:.3em .6em;border-left:4px solid #999;white-space:pre-wrap}
.tested{border-color:#1f77b4;background:#eef5fb}.opponent{border-color:#ff7f0e;background:#fff4ea}
.unseated{border-color:#888;background:#f6f6f6}img{max-width:100%}details{margin:.5em 0}
.answer{font-size:1.25em}.pair{display:grid;grid-template-columns:1fr 1fr;gap:1em}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _cell(interval: Interval | None) -> str:
    return f'<td class="num">{_e(interval.text()) if interval else "&ndash;"}</td>'


def _comparison_table(rows: Sequence[Comparison], help_text: Mapping[str, str]) -> str:
    head = "<tr><th>metric</th><th>seat</th><th>tested</th><th>opponent</th><th>tested &minus; opponent</th>"
    body = [head + "<th>pairs</th></tr>"]
    for c in rows:
        title = f' title="{_e(help_text.get(c.metric, ""))}"'
        body.append(
            f"<tr><td{title}>{_e(c.metric)}</td><td>{_e(c.seat)}</td>{_cell(c.tested)}{_cell(c.opponent)}"
            f'{_cell(c.difference)}<td class="num">{c.pairs}</td></tr>'
        )
    return "<table>" + "".join(body) + "</table>"


def _metric_notes(metrics: Sequence[str], help_text: Mapping[str, str]) -> str:
    items = "".join(f"<li><b>{_e(m)}</b>: {_e(help_text[m])}</li>" for m in metrics if m in help_text)
    return f'<ul class="note">{items}</ul>' if items else ""


def _transcript(game: Game, episode: Episode, labels: Mapping[str, str]) -> str:
    rewards = ", ".join(f"{_e(role)} {value:.3f}" for role, value in episode.rewards.items())
    summary = (
        f"seed {game.seed}, tested model in seat <b>{_e(game.tested_seat)}</b> &mdash; rewards: {rewards}"
    )
    if game.status != "ok":
        summary += f" &mdash; <b>failed</b>: {_e(game.error)}"
    turns = []
    for turn in episode.turns:
        # a role no side plays (a judge, a narrator) has no seat, whatever it is called
        side = game.sides.get(turn.role, UNSEATED)
        who = f"{turn.role} ({labels.get(side, 'no seat')})"
        turns.append(f'<div class="turn {side}"><b>{_e(who)}</b>: {_e(turn.text.strip())}</div>')
    return f"<details><summary>{summary}</summary>{''.join(turns) or '<p>(no turns)</p>'}</details>"


def _sample_games(result: EvalResult, count: int) -> list[tuple[Game, Episode]]:
    """The first `count` games in seed order: every seat of a seed together, so both sides are seen."""
    pairs = list(zip(result.games, result.episodes, strict=False))
    return sorted(pairs, key=lambda pair: (pair[0].seed, result.seats.index(pair[0].tested_seat)))[:count]


def _turns(episode: Episode) -> str:
    rows = [f'<div class="turn"><b>{_e(t.role)}</b>: {_e(t.text.strip())}</div>' for t in episode.turns]
    rewards = ", ".join(f"{_e(role)} {value:.3f}" for role, value in episode.rewards.items())
    return "".join(rows) + f'<p class="note">rewards: {rewards or "none"}</p>'


def _before_after(pairs: Sequence[tuple[Episode, Episode]]) -> str:
    """Transcripts of one scenario played by the base model and by the trained adapter, side by side."""
    blocks = [
        f"<h3>scenario {_e(before.metadata.get('scenario_id', before.episode_id))}</h3>"
        f'<div class="pair"><div><h4>before training (base model)</h4>{_turns(before)}</div>'
        f"<div><h4>after training (the trained adapter in every role)</h4>{_turns(after)}</div></div>"
        for before, after in pairs
    ]
    return "<h2>The same scenario before and after training</h2>" + "".join(blocks)


def _image(name: str, data: bytes) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<h2>{_e(name)}</h2><img alt="{_e(name)}" src="data:image/png;base64,{encoded}">'


def render_html(
    result: EvalResult,
    images: Mapping[str, bytes],
    transcripts: int = 6,
    before_after: Sequence[tuple[Episode, Episode]] = (),
) -> str:
    """The answer first (`EvalResult.verdict`), then the learning curve, the before/after transcripts, and
    the details: settings, outcome tables, per-game metrics, judge scores, seat plot, sample games."""
    config = result.config
    labels = {
        TESTED: f"tested: {config.get('adapter')}",
        OPPONENT: f"opponent: {config.get('opponent_label')}",
    }
    outcome = [c for c in result.comparisons if c.kind == OUTCOME]
    judged = [c for c in result.comparisons if c.kind == JUDGE]
    settings = {
        k: config.get(k)
        for k in ("env", "adapter", "opponent_label", "model", "episodes", "seed", "temperature")
    }
    learning = {name: data for name, data in images.items() if name == TRAINING_PLOT}
    parts = [
        f"<h1>Arena evaluation: {_e(config.get('env'))}</h1>",
        f'<p class="answer"><b>{_e(result.verdict())}</b></p>',
        f"<p>{_e(result.headline())}</p>",
        *(_image(name, data) for name, data in learning.items()),
        _before_after(before_after) if before_after else "",
        "<h2>Details</h2><table>"
        + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in settings.items())
        + "</table>",
        f'<p class="note">Each scenario seed is played once per seat ({_e(", ".join(result.seats))}) with the '
        "tested model in that seat and the opponent in the others, with the same scenario and sampling seed. "
        f"Intervals: {_e(result.method)}; confidence {_e(config.get('confidence'))}.</p>",
        "<h2>Outcome metrics</h2>",
        _comparison_table(outcome, result.metric_help)
        if outcome
        else "<p>This environment has no rule-based outcome per seat; see the per-game metrics below.</p>",
        _metric_notes(list(dict.fromkeys(c.metric for c in outcome)), result.metric_help),
    ]
    game_rows = "".join(
        f"<tr><td>{_e(g.metric)}{' (judge)' if g.kind == JUDGE else ''}</td><td>{_e(g.seat)}</td>{_cell(g.value)}</tr>"
        for g in result.game_metrics
    )
    parts += [
        "<h2>Per-game metrics</h2><p class='note'>By the seat the tested model took.</p>",
        f"<table><tr><th>metric</th><th>tested seat</th><th>value</th></tr>{game_rows}</table>",
    ]
    if judged:
        judge = (result.config.get("env_options") or {}).get("judge_model") or "the base model"
        parts += [
            "<h2>Judge scores</h2>",
            f'<p class="note">Scores from an LLM judge ({_e(str(judge))}). Judges tend to overrate trained '
            "models: read these beside the outcome metrics, not alone.</p>",
            _comparison_table(judged, result.metric_help),
        ]
    parts += [_image(name, data) for name, data in images.items() if name not in learning]
    failed = [g for g in result.games if g.status != "ok"]
    if failed:
        items = "".join(f"<li>seed {g.seed}, seat {_e(g.tested_seat)}: {_e(g.error)}</li>" for g in failed)
        parts.append(f"<h2>Failed games ({len(failed)})</h2><ul>{items}</ul>")
    samples = _sample_games(result, transcripts)
    if samples:
        parts.append(f"<h2>Sample transcripts ({len(samples)} of {len(result.games)})</h2>")
        parts += [_transcript(game, episode, labels) for game, episode in samples]
    body = "\n".join(parts)
    title = f"omar eval {_e(config.get('env'))}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{_STYLE}</style></head><body>{body}</body></html>\n"
    )


def write_report(
    result: EvalResult,
    out: Path,
    run_dir: Path | None = None,
    transcripts: int = 6,
    before_after: Sequence[tuple[Episode, Episode]] = (),
) -> dict[str, Path]:
    """Write eval.json, episodes.jsonl, the PNG plots and report.html into `out`; returns name -> path.
    run_dir: a training run folder whose metrics give the learning curve; before_after: (base, trained)
    episodes of the same scenario, shown side by side."""
    from langgraph_omar.trajectory import write_episodes

    out.mkdir(parents=True, exist_ok=True)
    paths = {"eval.json": write_atomic(out / "eval.json", _json_bytes(result.to_dict()))}
    if result.episodes:
        write_episodes(out / "episodes.jsonl", result.episodes, append=False)
        paths["episodes"] = out / "episodes.jsonl"
    images = {"mean by seat and paired difference": plot_seats(result)}
    paths["seats plot"] = write_atomic(out / "seats.png", images["mean by seat and paired difference"])
    if run_dir is not None:
        rows = RunFolder(run_dir).read_metrics()
        images[TRAINING_PLOT] = plot_training(rows)
        paths["training plot"] = write_atomic(out / "training.png", images[TRAINING_PLOT])
    html_text = render_html(result, images, transcripts, before_after)
    paths["report"] = write_atomic(out / "report.html", html_text.encode("utf-8"))
    return paths


def _json_bytes(data: Any) -> bytes:
    """JSON with NaN written as null (strict JSON) and anything else unknown as its repr."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return (json.dumps(clean(data), indent=2, default=repr, allow_nan=False) + "\n").encode("utf-8")
