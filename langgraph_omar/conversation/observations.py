"""What a role sees: its system prompt and the part of the transcript visible to it, as chat messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from langgraph_omar.conversation.actions import ActionContext
from langgraph_omar.conversation.roles import Role, brief_for
from langgraph_omar.conversation.state import Utterance, current_turn, scenario_of


def sees(viewer: str, audience: Sequence[str] | None, speaker: str | None = None) -> bool:
    """The visibility rule of every transcript (Werewolf's events too): public (`audience` None), the
    viewer's own words, or addressed to the viewer."""
    return audience is None or speaker == viewer or viewer in audience


def can_see(role_name: str, utterance: Utterance) -> bool:
    """Public utterances, the role's own, and private ones addressed to it."""
    return sees(role_name, utterance.get("visible_to"), utterance["speaker"])


def visible_transcript(state: Mapping[str, Any], role_name: str) -> list[Utterance]:
    return [u for u in state.get("transcript") or [] if can_see(role_name, u)]


def system_prompt(role: Role, state: Mapping[str, Any]) -> str:
    """Persona, scenario, goal, private facts and the action format's instructions, blank-line separated."""
    brief = brief_for(role, state)
    description = scenario_of(state).get("description")
    context = ActionContext(role=role.name, turn=current_turn(state), state=state)
    sections = [
        brief.persona,
        f"Scenario: {description}" if isinstance(description, str) and description else "",
        f"Your goal: {brief.goal}" if brief.goal else "",
        "What only you know:\n" + "\n".join(f"- {fact}" for fact in brief.private_info)
        if brief.private_info
        else "",
        role.action_format.instructions(context),
    ]
    return "\n\n".join(section for section in sections if section)


def observe(state: Mapping[str, Any], role: Role) -> list[BaseMessage]:
    """The messages `role`'s model is called with: a SystemMessage, then the visible transcript, the role's
    own utterances as AIMessage and everybody else's as HumanMessage named after the speaker; then the
    role's `turn_prompt`, if it has one."""
    messages: list[BaseMessage] = [SystemMessage(content=system_prompt(role, state))]
    for utterance in visible_transcript(state, role.name):
        if utterance["speaker"] == role.name:
            messages.append(AIMessage(content=utterance["text"]))
        else:
            messages.append(HumanMessage(content=utterance["text"], name=utterance["speaker"]))
    turn_prompt = role.turn_prompt_in(state)
    if turn_prompt:
        messages.append(HumanMessage(content=turn_prompt))
    return messages


def messages_as_dicts(messages: list[BaseMessage]) -> list[dict[str, str | None]]:
    """JSON-able form of an observation (for a person taking a role through an interrupt)."""
    kinds = {"system": "system", "ai": "assistant", "human": "user"}
    return [{"role": kinds.get(m.type, m.type), "name": m.name, "content": m.text} for m in messages]
