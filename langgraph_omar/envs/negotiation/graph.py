"""The negotiation environment as a LangGraph graph: prompts, the action format, rewards and the factory.

    graph = build_graph(model=ChatPolicy(), kind="price")
    final = graph.invoke(episode_input(sample_scenario(seed=7)))
    final["rewards"]            # {"buyer": 0.4, "seller": 0.6}
    negotiation_metrics([final, ...])

One compiled graph serves every scenario of its kind: `episode_input(scenario)` carries the scenario (each
role's private brief and the rules' data) in the input state; `{}` plays the scenario given to `build_graph`.
The rules, rewards and parser live in `negotiation.rules`, `negotiation.actions` and `negotiation.scenario`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph

from langgraph_omar.conversation import ActionContext, Outcome, ParsedAction, Role, build_conversation_graph
from langgraph_omar.conversation.calls import TurnReward, turn_reward
from langgraph_omar.conversation.roles import TurnPrompt
from langgraph_omar.conversation.state import scenario_of
from langgraph_omar.envs.negotiation.actions import NegotiationAction, parse_action
from langgraph_omar.envs.negotiation.rules import (
    NegotiationResult,
    NegotiationRules,
    NegotiationState,
    Offer,
    episode_rewards,
    move_rewards,
    step,
)
from langgraph_omar.envs.negotiation.rules import negotiation_metrics as _metrics_of_results
from langgraph_omar.envs.negotiation.scenario import (
    NegotiationScenario,
    PriceScenario,
    SplitScenario,
    sample_scenario,
    scenario_from_dict,
    scenario_to_dict,
)

SCENARIO_KEY = "negotiation"  # where the input state's `scenario` carries the full negotiation scenario


# ---- prompts ------------------------------------------------------------------------------------------------


def _pool(scenario: SplitScenario) -> str:
    return ", ".join(f"{count} {item}" for item, count in zip(scenario.items, scenario.counts, strict=True))


def role_briefs(scenario: NegotiationScenario) -> dict[str, dict[str, Any]]:
    """Each role's persona, goal and private facts (only that role sees its own)."""
    if isinstance(scenario, PriceScenario):
        return {
            "buyer": {
                "persona": f"You are a buyer. A seller offers a {scenario.item}, listed at ${scenario.list_price}.",
                "goal": "Buy it for as low a price as you can.",
                "private_info": [f"You can pay at most ${scenario.buyer_max}. Never agree to pay more."],
            },
            "seller": {
                "persona": f"You are selling your {scenario.item}, listed at ${scenario.list_price}.",
                "goal": "Sell it for as high a price as you can.",
                "private_info": [f"You will not sell for less than ${scenario.seller_min}."],
            },
        }
    if isinstance(scenario, SplitScenario):
        briefs = {}
        for role in scenario.roles:
            worth = ", ".join(
                f"each {item.rstrip('s')} is worth {value}"
                for item, value in zip(scenario.items, scenario.values[role], strict=True)
            )
            briefs[role] = {
                "persona": f"You are {role}. You and {scenario.other(role)} must divide: {_pool(scenario)}.",
                "goal": "Get items worth as many points to you as you can.",
                "private_info": [f"To you, {worth} points."],
            }
        return briefs
    raise TypeError(f"unsupported scenario type {type(scenario).__name__}")


def default_turn_prompt(scenario: NegotiationScenario, role: str, standing: Offer | None = None) -> str:
    """The last user message of every call: small models follow a worked example there far better than the
    format rules in the system prompt (with SmolLM2-135M, "Your turn." gave almost no legal actions). The
    example's offer is legal in every scenario of the kind and reveals nothing private: the seller asks the
    public list price, the buyer offers 60% of it; in the split kind one unit of an item.

    `standing`: the other side's legal offer on the table, which the message then names, with an accept
    example. With the offer example alone, the default model almost never accepted a standing offer, so
    episodes nearly never ended in a deal and the outcome reward gave self-play nothing to learn from
    (docs/experiments.md has the figures).
    """
    price_kind = isinstance(scenario, PriceScenario)
    reply = (
        f"Reply as {'the ' if price_kind else ''}{role} in one or two sentences, "
        "then write your action on the last line.\n"
    )
    if standing is not None:
        other = f"the {standing.role}" if price_kind else standing.role
        offer = _offer_text(scenario, standing)
        return (
            f"{other[0].upper()}{other[1:]} offers {offer}. {reply}"
            f"To agree{f' to {offer}' if price_kind else ''}, end with ACCEPT; to ask for another "
            f"{'price, end with OFFER and your price' if price_kind else 'split, end with OFFER and what you keep'}"
            ".\nExample reply:\nThat works for me.\nACCEPT"
        )
    if isinstance(scenario, SplitScenario):
        singular = [item[:-1] if item.endswith("s") else item for item in scenario.items]
        example = f"I would like the {scenario.items[0]}.\nOFFER 1 {singular[0]}" + "".join(
            f" 0 {item}" for item in scenario.items[1:]
        )
    elif isinstance(scenario, PriceScenario):  # a fixed price ($150) was parroted by sellers of $600 laptops
        if role == "seller":
            example = f"It is worth the asking price.\nOFFER {scenario.list_price:g}"
        else:
            example = f"That price is too high for me.\nOFFER {round(scenario.list_price * 0.6)}"
    else:
        raise TypeError(f"unsupported scenario type {type(scenario).__name__}")
    return reply + f"Example reply:\n{example}"


def _offer_text(scenario: NegotiationScenario, offer: Offer) -> str:
    if isinstance(scenario, SplitScenario) and offer.split is not None:
        kept = ", ".join(f"{n} {item}" for n, item in zip(offer.split, scenario.items, strict=True))
        return f"to keep {kept}, you get the rest"
    return f"${offer.price:g}"


def standing_offer(
    state: Mapping[str, Any], role: str, scenario: NegotiationScenario, rules: NegotiationRules
) -> Offer | None:
    """The other side's legal offer that `role` could accept now, or None."""
    offer = game_state(state, scenario, rules).offer
    return offer if offer is not None and offer.role != role and offer.legal else None


def public_description(scenario: NegotiationScenario) -> str:
    """What both roles are told."""
    if isinstance(scenario, PriceScenario):
        return f"A buyer and a seller negotiate the price of a {scenario.item}. No deal means nobody gains."
    if isinstance(scenario, SplitScenario):
        return f"Two people divide {_pool(scenario)}. No deal means nobody gets anything."
    raise TypeError(f"unsupported scenario type {type(scenario).__name__}")


def episode_input(scenario: NegotiationScenario) -> dict[str, Any]:
    """The input state that plays `scenario` in a graph from `build_graph` (of the same kind)."""
    return {
        "scenario": {
            "id": scenario.scenario_id,
            "seed": scenario.seed,
            "description": public_description(scenario),
            "roles": role_briefs(scenario),
            SCENARIO_KEY: scenario_to_dict(scenario),
        }
    }


def sample_input(seed: int, kind: str = "price") -> dict[str, Any]:
    """`episode_input(sample_scenario(seed, kind))`: one call per episode gives varied scenarios."""
    return episode_input(sample_scenario(seed, kind))


# ---- the action format -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NegotiationActionFormat:
    """The conversation `ActionFormat` of a negotiation: OFFER / ACCEPT / REJECT / WALK AWAY lines.

    Parsed actions: {"type": "offer", "price": p} or {"type": "offer", "split": [kept...]}, {"type": "accept"},
    {"type": "reject"}, {"type": "walk_away"}, or {"type": "talk"} with fallback "talk" and the reason.
    """

    default_scenario: NegotiationScenario

    def instructions(self, context: ActionContext) -> str:
        scenario = scenario_in(context.state, self.default_scenario)
        if isinstance(scenario, SplitScenario):
            example = " ".join(f"{1 if i == 0 else 0} {item}" for i, item in enumerate(scenario.items))
            offer = f"OFFER followed by what YOU keep, e.g. `OFFER {example}` (the other side gets the rest)"
        else:
            offer = "OFFER followed by a price, e.g. `OFFER 120`"
        return (
            "Write one short message. End it with exactly one action on its own line: "
            f"{offer}; ACCEPT (agree to the other side's last offer); REJECT; or WALK AWAY (end with no deal)."
        )

    def parse(self, text: str, context: ActionContext) -> ParsedAction:
        scenario = scenario_in(context.state, self.default_scenario)
        items = scenario.items if isinstance(scenario, SplitScenario) else None
        action = parse_action(text, items)
        return ParsedAction(
            action_to_dict(action), fallback="talk" if action.fallback else None, reason=action.fallback
        )


def action_to_dict(action: NegotiationAction) -> dict[str, Any]:
    """The JSON-able form stored in the transcript; `action_from_dict` inverts it."""
    data: dict[str, Any] = {"type": action.type}
    if action.price is not None:
        data["price"] = action.price
    if action.split is not None:
        data["split"] = list(action.split)
    return data


def action_from_dict(data: Mapping[str, Any]) -> NegotiationAction:
    split = data.get("split")
    kind = data.get("type", "talk")
    if kind not in ("offer", "accept", "reject", "walk_away", "talk"):
        kind = "talk"  # an utterance not made by a negotiator's format (e.g. a narrator line) is talk
    return NegotiationAction(kind, data.get("price"), tuple(split) if split is not None else None)


# ---- state, rewards and metrics over graph states ------------------------------------------------------------


def scenario_in(state: Mapping[str, Any], default: NegotiationScenario) -> NegotiationScenario:
    """The scenario a graph state plays: the input's `scenario.negotiation`, else `default`."""
    raw = scenario_of(state).get(SCENARIO_KEY)
    return default if raw is None else scenario_from_dict(raw)


def game_state(
    state: Mapping[str, Any], scenario: NegotiationScenario, rules: NegotiationRules
) -> NegotiationState:
    """The negotiation after the transcript's moves (by the scenario's roles) so far."""
    game = NegotiationState()
    for utterance in state.get("transcript") or []:
        if game.finished:
            break
        if utterance["speaker"] in scenario.roles:
            game = step(scenario, game, utterance["speaker"], action_from_dict(utterance["action"]), rules)
    return game


def result_from_state(final_state: Mapping[str, Any]) -> NegotiationResult:
    """The `NegotiationResult` recorded in a graph's final state (its `metrics` and `rewards`)."""
    metrics = final_state.get("metrics") or {}
    try:
        return NegotiationResult(
            outcome=metrics["outcome"],
            turns=int(metrics["negotiation_turns"]),
            rewards=dict(final_state["rewards"]),
            fallbacks=int(metrics.get("fallbacks", 0)),
        )
    except KeyError as error:
        raise ValueError(
            f"final state key {error.args[0]!r} is missing; expected the final state of a negotiation graph"
        ) from None


def negotiation_metrics(episodes: Sequence[NegotiationResult | Mapping[str, Any]]) -> dict[str, float]:
    """Agreement rate, turns to agreement, mean surplus share and reward per role, over finished episodes
    (`NegotiationResult`s or negotiation graphs' final states)."""
    results = [e if isinstance(e, NegotiationResult) else result_from_state(e) for e in episodes]
    return _metrics_of_results(results)


# ---- the graph ------------------------------------------------------------------------------------------------


def action_line_pattern(scenario: NegotiationScenario, can_accept: bool = True) -> str:
    """A regular expression for one reply: a short message on one line, then one action line
    (`OFFER <price>` or `OFFER <count> <item> ...` for the scenario's items, REJECT, WALK AWAY, and ACCEPT when
    `can_accept`: the other side has a legal offer on the table)."""
    if isinstance(scenario, SplitScenario):
        items = "|".join(re.escape(item) for item in scenario.items)
        offer = f"OFFER( [0-9] ({items})){{1,{len(scenario.items)}}}"
    else:
        offer = "OFFER [1-9][0-9]{0,5}"
    actions = [offer, *(["ACCEPT"] if can_accept else []), "REJECT", "WALK AWAY"]
    return f"[^\\n]{{1,200}}\\n({'|'.join(actions)})"


def _behaviour_rewards(
    state: Mapping[str, Any], scenario: NegotiationScenario, rules: NegotiationRules
) -> list[TurnReward]:
    """`move_rewards` of the transcript's moves, each on the model call that made it (moves by a person or a
    script have no call and get none)."""
    moves = [u for u in state.get("transcript") or [] if u["speaker"] in scenario.roles]
    scores = move_rewards(scenario, [(u["speaker"], action_from_dict(u["action"])) for u in moves], rules)
    return [
        turn_reward(u["call_id"], score, f"achievable surplus change x{rules.behaviour_rewards:g}")
        for u, score in zip(moves, scores, strict=True)
        if score and "call_id" in u
    ]


def build_graph(
    model: BaseChatModel | None = None,
    scenario: NegotiationScenario | None = None,
    *,
    kind: str = "price",
    rules: NegotiationRules | None = None,
    models: Mapping[str, BaseChatModel] | None = None,
    turn_prompts: Mapping[str, TurnPrompt] | None = None,
    checkpointer: BaseCheckpointSaver | None = None,
    constrained_actions: bool = False,
) -> CompiledStateGraph:
    """A compiled negotiation graph: the scenario's two roles take turns (first role first).

    model: the chat model of every role (default: `ChatPolicy()`, the shared default model).
    scenario: played when the input has no scenario (default: `sample_scenario(0, kind)`).
    models: per-role overrides, e.g. {"buyer": trained, "seller": base} for arena evaluation.
    turn_prompts: per-role last user message of every call, a text or a function of the state (default:
        `default_turn_prompt`, naming the other side's standing offer; "" for none).
    constrained_actions: every reply is asked for with `response_format` {"type": "regex"} of
        `action_line_pattern` (for the scenario played and the offer on the table), which `ChatPolicy` decodes
        under: a message line, then a legal action line (ACCEPT only when there is an offer to accept), so no
        reply falls back to talk. Models that take no such option ignore it.
    The final state holds `rewards` (role -> surplus share), `metrics` (outcome, negotiation_turns, deal,
    illegal_offers, ...) and the parser's `fallbacks`.
    """
    rules = rules or NegotiationRules()
    default = scenario or sample_scenario(0, kind)
    models = dict(models or {})
    unknown = sorted(set(models) - set(default.roles))
    if unknown:
        raise ValueError(
            f"build_graph: models given for unknown roles {unknown}; roles are {list(default.roles)}"
        )
    if model is None and len(models) < len(default.roles):
        from langgraph_omar.chat_model import ChatPolicy  # deferred: loads nothing until a role is called

        model = ChatPolicy()
    action_format = NegotiationActionFormat(default)
    briefs = role_briefs(default)

    def action_line(role: str) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
        def options(state: Mapping[str, Any]) -> dict[str, Any]:
            played = scenario_in(state, default)
            pattern = action_line_pattern(played, standing_offer(state, role, played, rules) is not None)
            return {"response_format": {"type": "regex", "regex": pattern}}

        return options

    def default_prompt(role: str) -> TurnPrompt:
        def prompt(state: Mapping[str, Any]) -> str:
            played = scenario_in(state, default)
            return default_turn_prompt(played, role, standing_offer(state, role, played, rules))

        return prompt

    prompts = {name: default_prompt(name) for name in default.roles} | dict(turn_prompts or {})
    roles = [
        Role(
            name,
            persona=briefs[name]["persona"],
            goal=briefs[name]["goal"],
            private_info=briefs[name]["private_info"],
            model=models.get(name, model),
            action_format=action_format,
            turn_prompt=prompts[name],
            call_options=action_line(name) if constrained_actions else None,
        )
        for name in default.roles
    ]

    def finished(state: Mapping[str, Any]) -> bool:
        return game_state(state, scenario_in(state, default), rules).finished

    def outcome(state: Mapping[str, Any]) -> Outcome:
        played = scenario_in(state, default)
        game = game_state(state, played, rules)
        if not game.finished:  # the conversation stopped before the rules ended the game
            game = replace(game, outcome="turn_limit")
        deal = game.deal
        metrics: dict[str, Any] = {
            "outcome": game.outcome,
            "agreement": game.outcome == "agreement",
            "negotiation_turns": game.turns,
            "illegal_offers": game.illegal_offers,
            "rule_fallbacks": [f.reason for f in game.fallbacks],
            "scenario_id": played.scenario_id,
        }
        if deal is not None:
            metrics["deal"] = {"by": deal.role, "price": deal.price, "split": list(deal.split or [])}
        return Outcome(
            rewards=episode_rewards(played, game, rules),
            metrics=metrics,
            turn_rewards=_behaviour_rewards(state, played, rules) if rules.behaviour_rewards else (),
        )

    return build_conversation_graph(
        roles,
        turn_order="round_robin",
        max_turns=rules.max_turns,
        stop_when=finished,
        reward_fn=outcome,
        checkpointer=checkpointer,
        name=f"negotiation_{default.kind}",
    )
