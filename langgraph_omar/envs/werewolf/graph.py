"""The Werewolf game as a LangGraph StateGraph: phases as nodes, one node per player, `Send` fan-out.

    START -> setup -> <first phase> --(Send per acting player)--> player_<name> ... -> resolve
    resolve -> <the same phase> (next group) | finish
    <phase> -> <next phase> | dawn (between night and day) | finish;   dawn -> <first day phase> | finish
    finish -> END

Every player node carries the node metadata `{"player": player}` and calls its chat model through the shared
action layer (`langgraph_omar.conversation.calls`) with the node's RunnableConfig (callbacks and metadata
propagate), on a prompt built from that player's `Observation` only. The call's `agent` is the player (each
player's turns form its own trajectory, ending on its own reward) and its `role` the player's game role
(Werewolf, Seer, Villager, ...: dealt by the seed when `shuffle_roles`), by which per-role baselines, role
balance and `adapter_by_role` seating group; the player is also in `Turn.metadata["player"]`. The call's id is
stamped on the action it chose and on its fallback, if any, so the recorded turn carries `Turn.fallback` and its
behaviour-level reward. Players of one group (the werewolves' kill, the day vote)
are sent together, so a batching engine sees their calls at once. The final state holds `rewards` (per game
role), `agent_rewards` (per player), `turn_rewards`, `metrics`, `fallbacks` and `winner`. Input: `{}` or
`{"seed": int}` (overrides the build-time seed, for batches of games).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Send

from langgraph_omar.conversation.calls import ModelReply, ainvoke_model, invoke_model, stamp_call
from langgraph_omar.envs.werewolf.actions import CHAT_KINDS, move_pattern
from langgraph_omar.envs.werewolf.config import (
    NIGHT_PHASE_ROLE,
    WerewolfConfig,
    WerewolfConfigError,
    load_werewolf_config,
)
from langgraph_omar.envs.werewolf.prompts import build_messages
from langgraph_omar.envs.werewolf.rewards import finish
from langgraph_omar.envs.werewolf.rules import (
    dawn,
    enter_phase,
    new_game,
    next_group,
    next_phase,
    observe_task,
    resolve_group,
    take_action,
)
from langgraph_omar.envs.werewolf.state import Observation, WerewolfState, apply_update, combine_updates

DEFAULT_MAX_TOKENS = 96  # a werewolf turn is a command or one or two sentences


def player_node_name(player: str, taken: set[str] | None = None) -> str:
    """A node name for `player` that LangGraph accepts ('player_' + the name with odd characters as '_')."""
    base = "player_" + re.sub(r"[^0-9A-Za-z_-]", "_", player)
    name, suffix = base, 2
    while taken is not None and name in taken:
        name, suffix = f"{base}_{suffix}", suffix + 1
    return name


def _resolve_models(
    model: BaseChatModel | Mapping[str, BaseChatModel] | None, players: tuple[str, ...]
) -> dict[str, BaseChatModel]:
    if isinstance(model, Mapping):
        missing = [p for p in players if p not in model]
        if missing:
            raise WerewolfConfigError(
                f"model: no chat model for player(s) {missing}; expected one per player"
            )
        return {p: model[p] for p in players}
    if model is None:
        from langgraph_omar.chat_model import ChatPolicy  # the shared local default model, loaded lazily

        model = ChatPolicy(max_tokens=DEFAULT_MAX_TOKENS)
    return dict.fromkeys(players, model)


def _player_runnable(
    game: WerewolfConfig, player: str, chat_model: BaseChatModel, node: str, constrained_moves: bool
) -> RunnableLambda:
    def call(observation: Observation) -> dict[str, Any]:
        return {"role": observation["role"], "agent": player, "turn_metadata": {"player": player}}

    def model_for(observation: Observation) -> Runnable:
        if not constrained_moves or observation["kind"] in CHAT_KINDS:
            return chat_model
        pattern = move_pattern(observation["legal"])
        return chat_model.bind(response_format={"type": "regex", "regex": pattern})

    def record(observation: Observation, reply: ModelReply, seed: int) -> dict[str, Any]:
        update = take_action(game, observation, reply.text, seed)
        for key in ("actions", "fallbacks"):
            update[key] = stamp_call(update[key], reply.call_id)
        return update

    def act(payload: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        observation = payload["observation"]
        messages = build_messages(game, observation)
        reply = invoke_model(model_for(observation), messages, config, **call(observation))
        return record(observation, reply, payload["seed"])

    async def aact(payload: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        observation = payload["observation"]
        messages = build_messages(game, observation)
        reply = await ainvoke_model(model_for(observation), messages, config, **call(observation))
        return record(observation, reply, payload["seed"])

    return RunnableLambda(act, afunc=aact, name=node)


def recursion_limit(game: WerewolfConfig) -> int:
    """An upper bound on LangGraph supersteps for a whole game under `game`'s rules."""
    rules, players = game.rules, len(game.players)
    groups = (
        players * rules.werewolf_discussion_rounds
        + len(NIGHT_PHASE_ROLE)
        + players * rules.discussion_rounds
        + 1
    )
    # three supersteps per group (phase node, players, resolve), plus a phase's closing step and dawn
    return rules.max_rounds * (3 * groups + 2 * len(game.phase_cycle) + 2) + 20


def build_graph(
    model: BaseChatModel | Mapping[str, BaseChatModel] | None = None,
    config_path: str | Path | WerewolfConfig | None = None,
    seed: int = 0,
    *,
    roster_path: str | Path | None = None,
    rules: Mapping[str, Any] | None = None,
    checkpointer: Any = None,
    constrained_moves: bool = False,
) -> CompiledStateGraph:
    """Compile the Werewolf game graph.

    model: one chat model for all players (One Model, All Roles), a mapping player -> model, or None for the
    package's default `ChatPolicy`. config_path: a config file (None: the bundled classic_6) or a loaded
    `WerewolfConfig`. seed: default game seed (fallbacks, ties, role shuffling). roster_path, rules: passed to
    `load_werewolf_config`. constrained_moves: every move (not speeches or the wolves' chat) is asked for with
    `response_format` {"type": "regex"} of `actions.move_pattern` over the legal moves, which `ChatPolicy`
    decodes under, so no move falls back; models that take no such option ignore it. The compiled graph carries
    a recursion limit large enough for a whole game.
    """
    if isinstance(config_path, WerewolfConfig):
        if rules or roster_path is not None:
            raise WerewolfConfigError(
                "rules/roster_path: give them with a config file, not a loaded WerewolfConfig"
            )
        game = config_path
    else:
        game = load_werewolf_config(config_path, roster_path, rules=rules)
    models = _resolve_models(model, game.players)
    taken: set[str] = set()
    player_nodes: dict[str, str] = {}
    for player in game.players:
        player_nodes[player] = player_node_name(player, taken)
        taken.add(player_nodes[player])

    graph = StateGraph(WerewolfState)
    graph.add_node("setup", lambda state: new_game(game, state.get("seed", seed)))
    for player, node in player_nodes.items():
        graph.add_node(
            node,
            _player_runnable(game, player, models[player], node, constrained_moves),
            metadata={"player": player},
        )
        graph.add_edge(node, "resolve")

    def phase_node(phase: str) -> Any:
        def run(state: WerewolfState) -> dict[str, Any]:
            update = {} if state["phase"] == phase else enter_phase(state, game, phase)
            if update.get("finished"):
                return update
            return combine_updates(update, next_group(apply_update(state, update)))

        return run

    def dispatch(after: str) -> Any:
        def route(state: WerewolfState) -> Any:
            if state["finished"]:
                return "finish"
            current = state["current"]
            if current is None:
                return after
            return [
                Send(player_nodes[p], {"observation": observe_task(state, game, p), "seed": state["seed"]})
                for p in current["players"]
            ]

        return route

    for phase in game.phase_cycle:
        after = next_phase(game, phase)
        graph.add_node(phase, phase_node(phase))
        graph.add_conditional_edges(phase, dispatch(after), [after, "finish", *player_nodes.values()])
    first_day = next_phase(game, "dawn")
    graph.add_node("dawn", lambda state: dawn(state, game))
    graph.add_conditional_edges(
        "dawn", lambda s: "finish" if s["finished"] else first_day, [first_day, "finish"]
    )
    graph.add_node("resolve", lambda state: resolve_group(state, game))
    graph.add_conditional_edges(
        "resolve", lambda s: "finish" if s["finished"] else s["phase"], [*game.phase_cycle, "finish"]
    )
    graph.add_node("finish", lambda state: finish(state, game))
    graph.add_edge(START, "setup")
    graph.add_edge("setup", game.phase_cycle[0])
    graph.add_edge("finish", END)
    compiled = graph.compile(checkpointer=checkpointer, name="werewolf")
    return compiled.with_config(recursion_limit=recursion_limit(game))
