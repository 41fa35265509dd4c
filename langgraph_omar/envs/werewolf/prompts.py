"""Werewolf prompts: an `Observation` (what one player may see) -> chat messages. Nothing else goes in."""

from __future__ import annotations

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from langgraph_omar.envs.werewolf import actions as act
from langgraph_omar.envs.werewolf.config import WEREWOLF, WerewolfConfig
from langgraph_omar.envs.werewolf.state import Observation


def _names(names: list[str]) -> str:
    return ", ".join(names) if names else "nobody"


def instruction(observation: Observation) -> str:
    """The request for this turn, with the exact reply format and the legal choices."""
    kind, legal = observation["kind"], observation["legal"]
    if kind == act.WOLF_CHAT:
        return (
            "Talk privately with your fellow werewolves about whom to attack tonight. "
            "Reply with one or two sentences."
        )
    if kind == act.SPEAK:
        return "It is your turn to speak to everyone. Reply with one or two sentences, your words only."
    if kind == "kill":
        return f"Choose tonight's victim. Reply with exactly: KILL NAME. Possible victims: {_names(legal[act.KILL])}."
    if kind == "inspect":
        return f"Choose a player to inspect. Reply with exactly: INSPECT NAME. You may inspect: {_names(legal[act.INSPECT])}."
    if kind == "protect":
        return (
            "Choose a player to protect from the werewolves tonight. Reply with exactly: PROTECT NAME. "
            f"You may protect: {_names(legal[act.PROTECT])}."
        )
    if kind == "vote":
        return (
            "Vote to exile the player you believe is a werewolf. Reply with exactly: VOTE NAME, or ABSTAIN. "
            f"You may vote for: {_names(legal[act.VOTE])}."
        )
    victim = observation["victim"]
    options = []
    if act.SAVE in legal:
        options.append(f"SAVE (use your healing potion on {victim})")
    if act.POISON in legal:
        options.append(f"POISON NAME (your poison; one of: {_names(legal[act.POISON])})")
    options.append("PASS (do nothing tonight)")
    attacked = (
        f"The werewolves attacked {victim} tonight." if victim else "The werewolves attacked nobody tonight."
    )
    return f"{attacked} Reply with exactly one of: {'; '.join(options)}."


def build_messages(config: WerewolfConfig, observation: Observation) -> list[BaseMessage]:
    """[system: rules + the player's own identity, human: visible history + this turn's request]."""
    identity = [f"You are {observation['player']}. Your secret role: {observation['role']}."]
    if observation["goal"]:
        identity.append(f"Your goal: {observation['goal']}")
    if observation["secret"]:
        identity.append(f"Your secret: {observation['secret']}")
    if observation["role"] == WEREWOLF:
        identity.append(
            f"Your fellow werewolves: {_names(observation['teammates'])}. Only werewolves see the night channel."
        )
    identity.append("You do not know anyone else's role unless the game has shown it to you.")
    system = f"{config.describe()}\n\n" + "\n".join(identity)
    period = "Night" if observation["phase"].startswith("Night") else "Day"
    history = "\n".join(observation["events"]) or "(nothing yet)"
    human = (
        f"What you have seen so far:\n{history}\n\n"
        f"Players still in the game: {_names(observation['alive'])}.\n"
        f"Now ({period} {observation['round']}): {instruction(observation)}"
    )
    return [SystemMessage(content=system), HumanMessage(content=human)]
