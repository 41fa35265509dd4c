"""A role in a conversation: who it is, what it wants, what only it knows, and who plays it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable

from langgraph_omar.conversation.actions import ActionFormat, FreeText
from langgraph_omar.conversation.state import scenario_of

# Node names a conversation graph uses for itself, and characters LangGraph reserves in node names.
RESERVED_NAMES = frozenset({"__start__", "__end__", "next_turn", "score"})
_RESERVED_CHARACTERS = ("|", ":")

Audience = Sequence[str] | Callable[[Mapping[str, Any]], Sequence[str] | None] | None
TurnPrompt = str | Callable[[Mapping[str, Any]], str | None] | None
CallOptions = Mapping[str, Any] | Callable[[Mapping[str, Any]], Mapping[str, Any]] | None


@dataclass(frozen=True)
class Role:
    name: str  # unique in the conversation; also the name of the role's node
    persona: str = ""  # the system prompt: who the role is
    goal: str = ""  # what the role wants from this conversation
    private_info: str | Sequence[str] = ""  # facts only this role knows (a text or a list of facts)
    model: BaseChatModel | None = None  # any LangChain chat model; None only when a person plays the role
    action_format: ActionFormat = field(default_factory=FreeText)  # how its text becomes an action
    human: bool = False  # a person plays it: the node interrupts the graph and waits for Command(resume=...)
    audience: Audience = None  # who sees its moves: None = everyone; a list or a function of the state
    # a last user message on every call (e.g. "Your turn."), or a function of the state giving it; None: nothing
    turn_prompt: TurnPrompt = None
    # options of every model call (e.g. a `response_format` to decode under), or a function of the state giving
    # them; passed to the model as `model.bind(**options)`
    call_options: CallOptions = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"Role.name: expected a non-blank string, got {self.name!r}")
        if self.name in RESERVED_NAMES or any(c in self.name for c in _RESERVED_CHARACTERS):
            raise ValueError(
                f"Role.name {self.name!r}: names {sorted(RESERVED_NAMES)} and the characters "
                f"{_RESERVED_CHARACTERS} are reserved by the graph"
            )
        if self.model is None and not self.human:
            raise ValueError(f"role {self.name!r}: a model is required unless human=True")
        if self.model is not None and not isinstance(self.model, Runnable):
            raise ValueError(
                f"role {self.name!r}: model must be a LangChain chat model, got {type(self.model).__name__}"
            )
        if not (hasattr(self.action_format, "parse") and hasattr(self.action_format, "instructions")):
            raise ValueError(f"role {self.name!r}: action_format needs parse() and instructions() methods")

    def audience_in(self, state: Mapping[str, Any]) -> list[str] | None:
        """Who sees this role's move in `state` (None = public)."""
        audience = self.audience(state) if callable(self.audience) else self.audience
        if audience is None:
            return None
        if isinstance(audience, str) or not all(isinstance(name, str) for name in audience):
            raise ValueError(f"role {self.name!r} audience: expected a list of role names, got {audience!r}")
        return list(audience)

    def turn_prompt_in(self, state: Mapping[str, Any]) -> str | None:
        """The last user message of this role's call in `state` (None or "": no message)."""
        prompt = self.turn_prompt(state) if callable(self.turn_prompt) else self.turn_prompt
        return prompt or None

    def model_in(self, state: Mapping[str, Any]) -> Runnable:
        """The role's model with this call's options in `state` bound (the model itself when there are none)."""
        assert self.model is not None, f"role {self.name!r} is played by a person"
        options = self.call_options(state) if callable(self.call_options) else self.call_options
        return self.model.bind(**options) if options else self.model


@dataclass(frozen=True)
class Brief:
    """A role's persona, goal and private info for one episode (static role fields + scenario overrides)."""

    persona: str
    goal: str
    private_info: tuple[str, ...]


def brief_for(role: Role, state: Mapping[str, Any]) -> Brief:
    """The role's brief in this episode: `state["scenario"]["roles"][role.name]` overrides the Role's fields."""
    briefs = scenario_of(state).get("roles") or {}
    if not isinstance(briefs, Mapping):
        raise ValueError(
            f"state key scenario.roles: expected a mapping of role name -> brief, got {briefs!r}"
        )
    overrides = briefs.get(role.name) or {}
    if not isinstance(overrides, Mapping):
        raise ValueError(
            f"state key scenario.roles.{role.name}: expected a mapping with persona/goal/private_info, "
            f"got {type(overrides).__name__}"
        )
    unknown = set(overrides) - {"persona", "goal", "private_info"}
    if unknown:
        raise ValueError(
            f"state key scenario.roles.{role.name}: unknown keys {sorted(unknown)}; "
            "expected persona, goal, private_info"
        )
    persona = overrides.get("persona", role.persona)
    goal = overrides.get("goal", role.goal)
    for key, value in (("persona", persona), ("goal", goal)):
        if not isinstance(value, str):
            raise ValueError(f"role {role.name!r} {key}: expected a str, got {type(value).__name__}")
    return Brief(persona, goal, _facts(role.name, overrides.get("private_info", role.private_info)))


def _facts(role_name: str, private_info: object) -> tuple[str, ...]:
    if isinstance(private_info, str):
        return (private_info,) if private_info.strip() else ()
    if isinstance(private_info, Sequence) and all(isinstance(fact, str) for fact in private_info):
        return tuple(fact for fact in private_info if fact.strip())
    raise ValueError(
        f"role {role_name!r} private_info: expected a str or a list of str, got {private_info!r}"
    )
