"""Trajectories: episode -> agents (grouped by role) -> turns -> tokens, plus rewards.

A turn's `agent` is who acted (a player, a named node, a seat); its `role` is what agents are grouped by
(baselines, role balance, evaluation seats). Two werewolves are two agents of one role: two turn chains, each
with its own terminal reward. The agent defaults to the role, so a graph that names no agent has one agent per
role. One `Turn` is one recorded move: a model call, or a person's move through `interrupt`. Its `source` says
where it came from: "policy" (sampled by the local engine through `ChatPolicy`: the prompt ids, completion ids
and sampling log-probabilities are recorded token for token), "model" (any other LangChain chat model: text
only, no ids, no log-probabilities) or "human". Every turn keeps the chat `messages` it was given, so that a
text-only turn can be tokenized later with a policy's chat template. An `Episode` holds the turns in call
order and the rewards: a terminal reward per role (`rewards`), optionally per agent (`agent_rewards`: an agent
without an entry gets its role's; `reward_of`), optional per-turn rewards (`Turn.reward`) and named reward
dimensions per role (judges). Serialization lives beside it (`langgraph_omar.trajectory`: JSONL, Parquet).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# 2: Turn.source, Turn.model, Turn.messages; one on-disk record for JSONL and Parquet. 3: Turn.agent,
# Episode.agent_rewards
SCHEMA_VERSION = 3
READABLE_SCHEMA_VERSIONS = (1, 2, 3)  # older files are upgraded on read (each turn's agent is its role)

SOURCES = ("policy", "model", "human")  # Turn.source: who produced the turn


@dataclass
class Turn:
    role: str
    node: str
    text: str
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    step: int = 0  # the LangGraph superstep of the call
    finish_reason: str = "stop"
    temperature: float = 1.0
    adapter: str | None = None
    adapter_version: int = 0
    reward: float = 0.0  # per-turn reward added by an environment or a judge
    degenerate: str | None = None  # why the turn gets no policy signal ("empty", "repeated", ...)
    fallback: str | None = None  # what replaced an illegal action, when one was replaced
    run_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = "policy"  # one of SOURCES; only "policy" turns carry token ids and log-probabilities
    model: str | None = None  # the model that produced it (the engine's name, or the chat model's name)
    messages: list[dict[str, str]] = field(default_factory=list)  # the chat it was given: {role, content}
    agent: str = ""  # who acted (a player, a named node); "" means the role itself

    def __post_init__(self) -> None:
        if not self.agent:
            self.agent = self.role
        if self.source not in SOURCES:
            raise ValueError(f"turn of role {self.role!r}: source {self.source!r} is not one of {SOURCES}")
        if self.source != "policy" and (self.completion_ids or self.logprobs):
            raise ValueError(
                f"turn of role {self.role!r}: a {self.source!r} turn carries no token ids or log-probabilities "
                "(only the policy's own samples have them)"
            )
        if len(self.logprobs) != len(self.completion_ids):
            raise ValueError(
                f"turn of role {self.role!r}: {len(self.logprobs)} logprobs for "
                f"{len(self.completion_ids)} completion ids"
            )


# Run metadata key: {role: adapter name or None (the base model)} seated in place of the graph's own model
# for that role (ChatPolicy reads it per call). Which adapter played a turn is then recorded in `Turn.adapter`.
ADAPTER_BY_ROLE = "adapter_by_role"


def role_of(metadata: Mapping[str, Any]) -> str:
    """The role of a model call from its run metadata, the first of:
    - the node's `metadata={"role": ...}` (a node playing a role under another name, several nodes one role);
    - the name of the agent the call is made in: `lc_agent_name`, which langchain's `create_agent(name=...)`
      puts in the metadata of its runs (the agents of a langgraph-swarm);
    - the node holding the subgraph the call is made in, the next-to-last entry of the call's namespace
      `langgraph_checkpoint_ns` ("outer:id|worker:id|agent:id"): a supervisor's `create_react_agent` workers,
      any prebuilt agent added as a node, a node function that invokes an agent;
    - the LangGraph node's own name."""
    explicit = metadata.get("role") or metadata.get("lc_agent_name")
    if explicit:
        return str(explicit)
    namespace = str(metadata.get("langgraph_checkpoint_ns") or "").split("|")
    if len(namespace) >= 2 and (enclosing := namespace[-2].partition(":")[0]):
        return enclosing
    return str(metadata.get("langgraph_node") or "model")


def agent_of(metadata: Mapping[str, Any]) -> str:
    """The agent of a model call from its run metadata: `metadata={"agent": ...}` (on the node, or on the call
    for a node that acts for several agents), else the call's role (`role_of`)."""
    return str(metadata.get("agent") or role_of(metadata))


@dataclass
class Episode:
    episode_id: str
    turns: list[Turn] = field(default_factory=list)
    rewards: dict[str, float] = field(default_factory=dict)  # role -> terminal reward (what seats read)
    reward_dimensions: dict[str, dict[str, float]] = field(default_factory=dict)  # role -> name -> score
    metadata: dict[str, Any] = field(default_factory=dict)  # scenario_id, group_id, seed, model, adapter...
    status: str = "ok"  # "ok" or "failed"
    error: str | None = None
    schema_version: int = SCHEMA_VERSION
    # agent -> its own terminal reward, when the agents of a role earn different ones (a Werewolf player
    # eliminated early); an agent without an entry gets its role's
    agent_rewards: dict[str, float] = field(default_factory=dict)

    @property
    def roles(self) -> list[str]:
        return list(dict.fromkeys(t.role for t in self.turns))

    @property
    def agents(self) -> list[str]:
        return list(dict.fromkeys(t.agent for t in self.turns))

    def reward_of(self, turn: Turn) -> float | None:
        """The terminal reward of `turn`'s agent: its own entry in `agent_rewards`, else its role's in
        `rewards`, else None (an unrewarded role: a judge's or a narrator's calls)."""
        if turn.agent in self.agent_rewards:
            return self.agent_rewards[turn.agent]
        return self.rewards.get(turn.role)

    def roles_played_by(self, adapter: str | None) -> set[str]:
        """The roles whose every recorded turn `adapter` played (None: the base model)."""
        played: dict[str, bool] = {}
        for turn in self.turns:
            played[turn.role] = played.get(turn.role, True) and turn.adapter == adapter
        return {role for role, only in played.items() if only}

    def turns_of(self, role: str) -> list[Turn]:
        return [t for t in self.turns if t.role == role]

    def source_counts(self) -> dict[str, int]:
        """How many turns each source produced: {"policy": n, "model": n, "human": n}."""
        counts = dict.fromkeys(SOURCES, 0)
        for turn in self.turns:
            counts[turn.source] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Episode:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown episode keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        turn_keys = {f.name for f in fields(Turn)}
        turns = []
        for i, t in enumerate(data.get("turns", [])):
            extra = set(t) - turn_keys
            if extra:
                raise ValueError(f"turn {i}: unknown keys {sorted(extra)}")
            turns.append(Turn(**t))
        return cls(**{**data, "turns": turns})
