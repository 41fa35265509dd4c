"""Why an iteration's turns carry no learning signal, said with the setting that changes it.

Degenerate turns (`rl/degenerate.py`) get advantage 0 unless `advantage.degenerate_penalty` > 0. When they are
most of an iteration's trained turns (a small `--max-tokens` cuts most replies: `over_length`), most of the
batch is silently signal-free: `degenerate_note` names the reasons, their shares and the flags that change
them. An iteration whose every advantage is zero has one of two causes, told apart by
`zero_advantage_reason`: equal rewards within each group and role, or rewards that differ but whose turns are
all degenerate.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from langgraph_omar.rl.batch import TrainingBatch, TurnSample
from langgraph_omar.rl.config import AdvantageSettings
from langgraph_omar.rl.degenerate import REASONS
from langgraph_omar.trajectory import Episode

DOMINANT_SHARE = 0.5  # degenerate turns "dominate" a batch from this share of its trained turns on
MENTIONED_SHARE = 0.1  # a reason's own remedy is named from this share of the turns on (and the top reason's)

CAUSES = {
    "empty": "empty replies",
    "over_length": "replies cut at the token cap",
    "off_format": "actions the environment replaced by its fallback",
    "repeated": "replies repeating an earlier one, or looping",
}
assert set(CAUSES) == set(REASONS)


def degenerate_shares(reasons: Sequence[str | None]) -> dict[str, float]:
    """Share of all turns flagged for each reason, largest first; reasons no turn has are left out.

    ["over_length", None, "over_length", "repeated"] -> {"over_length": 0.5, "repeated": 0.25}."""
    counts = Counter(reason for reason in reasons if reason is not None)
    return {reason: n / len(reasons) for reason, n in counts.most_common()}


def degenerate_explanation(reasons: Sequence[str | None], max_tokens: int | None) -> str:
    """Which share of the turns is degenerate, for which reasons, and the flags that change it (one line).

    max_tokens: the token cap the replies were sampled with, when this run sets it (self-play); None when they
    were recorded elsewhere (training from files), where raising it is no remedy."""
    shares = degenerate_shares(reasons)
    total = sum(shares.values())
    parts = []
    for reason, share in shares.items():
        cause = CAUSES[reason]
        if reason == "over_length" and max_tokens is not None:
            cause += f" of {max_tokens} tokens"
        parts.append(f"{reason} {share:.2f}: {cause}")
    remedies = []
    for rank, (reason, share) in enumerate(shares.items()):
        if rank > 0 and share < MENTIONED_SHARE:
            continue
        if reason == "over_length" and max_tokens is not None:
            remedies.append(f"raise --max-tokens (now {max_tokens})")
        remedies.append(f"--no-degenerate.{reason.replace('_', '-')} to train on them as they are")
    remedies.append("--degenerate-penalty P (> 0) to train on them with a penalty")
    return (
        f"{total:.2f} of the trained turns are degenerate and get no signal ({'; '.join(parts)}); "
        f"{', or '.join(remedies)}"
    )


def degenerate_note(batch: TrainingBatch, settings: AdvantageSettings, max_tokens: int | None) -> str | None:
    """`degenerate_explanation` when degenerate turns are at least `DOMINANT_SHARE` of the batch's turns and get
    no signal (no degenerate penalty, not behaviour cloning, which drops them); else None."""
    if batch.behaviour_cloning or settings.degenerate_penalty > 0 or not batch.samples:
        return None
    reasons = [s.degenerate for s in batch.samples]
    if sum(r is not None for r in reasons) < DOMINANT_SHARE * len(reasons):
        return None
    return degenerate_explanation(reasons, max_tokens)


def rewards_differ_within_groups(
    episodes: Sequence[Episode], samples: Sequence[TurnSample], turn_reward_weight: float
) -> bool:
    """Whether two trajectories (one per episode and agent) of one role, from different episodes of a group,
    differ in reward: the agent's terminal reward, or (with a turn reward weight) its trained turns' rewards in
    order. (The agents of one episode are not each other's baseline.) samples index into `episodes`."""
    chains: dict[tuple[int, str, str], list[TurnSample]] = defaultdict(list)
    for s in samples:
        chains[(s.episode_index, s.role, s.agent)].append(s)
    seen: dict[tuple[str, str], list[tuple[int, tuple[float, ...]]]] = defaultdict(list)
    for (e, role, _), chain in chains.items():
        episode = episodes[e]
        terminal = episode.reward_of(episode.turns[chain[-1].turn_index]) or 0.0
        turn_rewards = [episode.turns[s.turn_index].reward if turn_reward_weight > 0 else 0.0 for s in chain]
        seen[(chain[0].group_key, role)].append((e, (terminal, *turn_rewards)))
    return any(e1 != e2 and v1 != v2 for members in seen.values() for e1, v1 in members for e2, v2 in members)


def zero_advantage_reason(
    batch: TrainingBatch,
    episodes: Sequence[Episode],
    settings: AdvantageSettings,
    max_tokens: int | None,
) -> str:
    """The true reason why every advantage of `batch` (episodes: those it was built from) is zero."""
    reasons = [s.degenerate for s in batch.samples]
    masked = settings.degenerate_penalty == 0 and any(r is not None for r in reasons)
    if masked and rewards_differ_within_groups(episodes, batch.samples, settings.turn_reward_weight):
        return (
            "every advantage is zero: rewards differ within groups, but the turns that carry the difference are "
            f"degenerate; {degenerate_explanation(reasons, max_tokens)}"
        )
    reason = "every advantage is zero (equal rewards within each group and role)"
    note = degenerate_note(batch, settings, max_tokens)
    return reason if note is None else f"{reason}; besides, {note}"


def untrained_reason(
    batch: TrainingBatch | None,
    record: dict[str, Any],
    episodes: Sequence[Episode] = (),
    settings: AdvantageSettings | None = None,
    max_tokens: int | None = None,
) -> str | None:
    """Why an iteration's update trains no turn (None when some turn carries a signal). episodes: those the
    batch was built from; max_tokens: the replies' token cap when this run sets it."""
    if batch is None:
        if record.get("bc_kept_turns") == 0 or record.get("warm_start"):
            return "behaviour cloning kept no turn (all degenerate, or below filter.min_reward)"
        return "no turn of the policy had a reward (the final state's `rewards` names no role it played)"
    if batch.behaviour_cloning:
        return None
    reasons = [s.degenerate for s in batch.samples]
    if all(reasons):
        return f"every turn was degenerate: {degenerate_explanation(reasons, max_tokens)}"
    if not bool(batch.advantages.abs().sum() > 0):
        return zero_advantage_reason(batch, episodes, settings or AdvantageSettings(), max_tokens)
    return None
