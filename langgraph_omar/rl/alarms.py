"""Reward-hacking alarms (OMAR): each iteration's metrics checked for the signs of a policy gaming its reward.

Four alarms, each against a reference, the mean of its metric over the first `early_stop.reference_iterations`
iterations that reported it (the start of the run):
- `entropy_collapse`: `entropy` (the policy's mean token entropy in the update) < min_entropy_ratio x reference;
- `length_collapse`: `policy_turn_tokens` (mean tokens per turn the policy played) < min_length_ratio x reference;
- `degenerate_share`: `policy_degenerate_share` (share of the policy's turns that are degenerate) > reference +
  max_degenerate_increase;
- `judge_outcome_gap`: `judge_outcome_gap` > reference + max_judge_gap_increase. An episode carries both for a
  role when its `reward_dimensions[role]` has a judge's score under "judge" and the rule-based outcome under
  "outcome", on one scale (SOTOPIA-pi's lesson: an LLM judge comes to overrate the trained policy).
A firing alarm warns (`RewardHackingWarning`, on the console) and its metric `alarm_<name>` counts the
iterations in a row it has fired (0: quiet). With `early_stop.stop_on_alarm`, a count reaching
`early_stop.patience` ends the run; that iteration's metrics carry `early_stop` = 1 (docs/design.md §4).
References and counts come from the records of the iterations this process ran since it started: a resumed run
takes its references again from its first iterations.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from langgraph_omar.rl.config import EarlyStopSettings
from langgraph_omar.trajectory import Episode

JUDGE_SCORE = "judge"  # reward_dimensions[role] key of a judge's score ...
OUTCOME_SCORE = "outcome"  # ... and of the rule-based outcome of the same episode, on the same scale

TrainedRoles = Callable[[Episode], Collection[str]]  # the roles of an episode the trained policy played
Rule = Callable[[float, float, EarlyStopSettings], bool]  # (value, reference, settings) -> fires

# alarm -> (watched metric, rule, what it means)
ALARMS: dict[str, tuple[str, Rule, str]] = {
    "entropy_collapse": (
        "entropy",
        lambda value, reference, s: value < s.min_entropy_ratio * reference,
        "entropy collapse: the policy's token entropy fell",
    ),
    "length_collapse": (
        "policy_turn_tokens",
        lambda value, reference, s: value < s.min_length_ratio * reference,
        "length collapse: the policy's turns got shorter",
    ),
    "degenerate_share": (
        "policy_degenerate_share",
        lambda value, reference, s: value > reference + s.max_degenerate_increase,
        "degenerate share: more of the policy's turns are degenerate",
    ),
    "judge_outcome_gap": (
        "judge_outcome_gap",
        lambda value, reference, s: (
            s.max_judge_gap_increase is not None and value > reference + s.max_judge_gap_increase
        ),
        "judge/outcome gap: the judge rates the policy above its outcomes",
    ),
}


class RewardHackingWarning(UserWarning):
    """An alarm fired: the policy may be gaming its reward (see the module docstring)."""


def trained_roles_of(trained: str | None | TrainedRoles) -> TrainedRoles:
    """The roles an episode's trained policy played: given as a function, or by the adapter that played them
    (None: the base model)."""
    if callable(trained):
        return trained
    return lambda episode: episode.roles_played_by(trained)


def policy_turn_metrics(episodes: Sequence[Episode], trained: str | None | TrainedRoles) -> dict[str, float]:
    """The watched metrics that come from the episodes, over the ok episodes' turns of the roles the policy
    played (`trained`: the adapter that played them, or a function of an episode naming them):
    `policy_turn_tokens` (mean completion tokens per turn), `policy_degenerate_share`, and `judge_outcome_gap`
    (mean judge - outcome over the (episode, role) pairs of those roles that carry both), each only when
    there is something to average."""
    roles_of = trained_roles_of(trained)
    ok = [(e, set(roles_of(e))) for e in episodes if e.status == "ok"]
    turns = [t for e, roles in ok for t in e.turns if t.role in roles]
    metrics: dict[str, float] = {}
    if turns:
        metrics["policy_turn_tokens"] = sum(len(t.completion_ids) for t in turns) / len(turns)
        metrics["policy_degenerate_share"] = sum(t.degenerate is not None for t in turns) / len(turns)
    gaps = [
        float(scores[JUDGE_SCORE]) - float(scores[OUTCOME_SCORE])
        for e, roles in ok
        for role in roles
        if JUDGE_SCORE in (scores := e.reward_dimensions.get(role, {})) and OUTCOME_SCORE in scores
    ]
    if gaps:
        metrics["judge_outcome_gap"] = sum(gaps) / len(gaps)
    return metrics


def _reference(history: Sequence[Mapping[str, Any]], metric: str, count: int) -> float | None:
    """Mean of `metric` over the first `count` records reporting it; None while fewer did."""
    values = [float(r[metric]) for r in history if metric in r][:count]
    return sum(values) / count if len(values) == count else None


def alarm_streaks(
    history: Sequence[Mapping[str, Any]], record: Mapping[str, Any], settings: EarlyStopSettings
) -> dict[str, tuple[int, float, float]]:
    """alarm -> (iterations in a row it has fired, value, reference) for the iteration of `record`, given the
    earlier iterations' records (which carry their own `alarm_<name>` counts). An alarm whose metric the
    record lacks, or whose reference is not set yet, is quiet: (0, nan, nan)."""
    previous = history[-1] if history else {}
    streaks = {}
    for name, (metric, fires, _) in ALARMS.items():
        reference = _reference(history, metric, settings.reference_iterations)
        if metric not in record or reference is None:
            streaks[name] = (0, float("nan"), float("nan"))
            continue
        value = float(record[metric])
        count = int(previous.get(f"alarm_{name}", 0)) + 1 if fires(value, reference, settings) else 0
        streaks[name] = (count, value, reference)
    return streaks


def watch_reward_hacking(
    history: Sequence[Mapping[str, Any]],
    record: dict[str, Any],
    episodes: Sequence[Episode],
    settings: EarlyStopSettings,
    trained: str | None | TrainedRoles,
    process: Any = None,
) -> bool:
    """Add this iteration's watched metrics (over the roles `trained` names: `policy_turn_metrics`) and
    `alarm_<name>` counts to `record`, warn for each firing alarm,
    and say whether the run should stop here (`early_stop` then set to 1 in `record`). Under several processes
    (`process`: accelerate's PartialState) the main process decides for all, so that all stop together."""
    record.update(policy_turn_metrics(episodes, trained))
    stop = False
    for name, (count, value, reference) in alarm_streaks(history, record, settings).items():
        record[f"alarm_{name}"] = float(count)
        if count == 0:
            continue
        metric, _, meaning = ALARMS[name]
        warnings.warn(
            f"iteration {record.get('iteration', '?')}: {meaning} ({metric} {value:.4g}, reference "
            f"{reference:.4g}); {count} iteration(s) in a row",
            RewardHackingWarning,
            stacklevel=2,
        )
        stop = stop or (settings.stop_on_alarm and count >= settings.patience)
    if process is not None and process.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        stop = bool(broadcast_object_list([stop], from_process=0)[0])
    if stop:
        record["early_stop"] = 1.0
        warnings.warn(
            f"iteration {record.get('iteration', '?')}: early_stop: an alarm fired {settings.patience} "
            "iteration(s) in a row; the run ends here",
            RewardHackingWarning,
            stacklevel=2,
        )
    return stop
