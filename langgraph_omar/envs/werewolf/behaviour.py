"""MARO's behaviour-level rewards for Werewolf: each decision scored by its effect on the decider's team.

With `rules.behaviour_rewards` = b > 0, a finished game scores every decision the player chose itself (a
fallback move scores 0: the model did not choose it), in units of b:

    VOTE X     +b when X plays for the other team (a village vote for a werewolf, a werewolf's vote for a
               villager), -b when X is the voter's teammate; ABSTAIN scores 0
    KILL X     +b when X died of the werewolves' attack that night (nobody protected or saved X), else 0
    INSPECT X  +b when X is a werewolf the seer had not inspected before, else 0
    PROTECT X  +b when the werewolves attacked X that night (the protection stopped the attack), else 0
    SAVE X     +b when the potion stopped the attack (nobody protected X that night), else 0
    POISON X   +b when X is a werewolf, -b otherwise
    speeches and PASS score 0.

The graph gives each score to the model call that chose the move (`turn_rewards`, see
`langgraph_omar.conversation.calls`); trajectories carry it as `Turn.reward`, beside the team outcome.
"""

from __future__ import annotations

from langgraph_omar.envs.werewolf import actions as act
from langgraph_omar.envs.werewolf.config import WEREWOLF, team_of
from langgraph_omar.envs.werewolf.state import ActionRecord, NightLog, WerewolfState


def _sign(good: bool) -> float:
    return 1.0 if good else -1.0


def decision_score(
    action: ActionRecord, state: WerewolfState, nights: dict[int, NightLog], inspected_before: bool
) -> tuple[float, str]:
    """(score in units of b, why) of one decision of a finished game."""
    roles, verb, target = state["roles"], action["verb"], action["target"]
    if target is None or action["fallback"]:
        return 0.0, ""
    night = nights.get(action["round"])
    attacked = night is not None and night["wolf_target"] == target
    if verb == act.VOTE:
        other_team = team_of(roles[target]) != team_of(roles[action["player"]])
        return _sign(other_team), "vote for the other team" if other_team else "vote for a teammate"
    if verb == act.POISON:
        wolf = roles[target] == WEREWOLF
        return _sign(wolf), "poisoned a werewolf" if wolf else "poisoned a villager"
    if verb == act.KILL:
        died = state["eliminated"].get(target) == {"round": action["round"], "cause": "werewolves"}
        return (1.0, "the attack killed") if died else (0.0, "")
    if verb == act.INSPECT and roles[target] == WEREWOLF and not inspected_before:
        return 1.0, "found a werewolf"
    if verb == act.PROTECT and attacked:
        return 1.0, "protected the attacked player"
    if verb == act.SAVE and attacked and night is not None:
        protected = target in (night["doctor_target"], night["guard_target"])
        return (0.0, "") if protected else (1.0, "saved the attacked player")
    return 0.0, ""


def behaviour_scores(state: WerewolfState) -> list[tuple[ActionRecord, float, str]]:
    """(decision, score in units of b, why) for every decision of a finished game that scores non-zero."""
    nights = {night["round"]: night for night in state.get("nights", [])}
    inspected: set[str] = set()
    scored = []
    for action in state.get("actions", []):
        target = action["target"]
        score, why = decision_score(action, state, nights, target in inspected)
        if action["verb"] == act.INSPECT and target is not None:
            inspected.add(target)
        if score:
            scored.append((action, score, why))
    return scored
