"""Negotiation environment: scenario generator, action parser, rules, rewards, metrics and the graph."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage
from model_output_strategies import model_outputs

from langgraph_omar.conversation import ScriptedChatModel
from langgraph_omar.envs.negotiation import (
    action_to_dict,
    build_graph,
    default_turn_prompt,
    episode_input,
    negotiation_metrics,
    result_from_state,
    role_briefs,
    sample_input,
    standing_offer,
)
from langgraph_omar.envs.negotiation.actions import parse_action
from langgraph_omar.envs.negotiation.graph import action_line_pattern
from langgraph_omar.envs.negotiation.rules import (
    NegotiationResult,
    NegotiationRules,
    NegotiationState,
    Offer,
    episode_rewards,
    replay,
    result_of,
    step,
)
from langgraph_omar.envs.negotiation.scenario import (
    PriceScenario,
    ScenarioConfig,
    SplitScenario,
    sample_scenario,
    scenario_from_dict,
    scenario_to_dict,
)

ITEMS = ("books", "hats", "balls")
RULES = NegotiationRules()
# zone = 250 - 150 = 100: a deal at p gives the seller (p - 150) / 100 and the buyer (250 - p) / 100.
BIKE = PriceScenario("bike", 0, item="bike", list_price=300, buyer_max=250, seller_min=150)
# alice's pool value: 3*1 + 2*2 + 1*3 = 10; bob's: 3*2 + 2*1 + 1*2 = 10.
POOL = SplitScenario("pool", 0, counts=(3, 2, 1), values={"alice": (1, 2, 3), "bob": (2, 1, 2)})


def scripted(lines: list[str]) -> ScriptedChatModel:
    """Answers its k-th call (k = its own earlier messages in the transcript) with lines[k]."""

    def respond(messages: list[BaseMessage]) -> str:
        own = sum(isinstance(message, AIMessage) for message in messages)
        return lines[min(own, len(lines) - 1)]

    return ScriptedChatModel(respond=respond)


# ---- scenarios ------------------------------------------------------------------------------------------------


def test_sample_scenario_is_deterministic_and_varies_with_the_seed() -> None:
    assert sample_scenario(5) == sample_scenario(5)
    assert sample_scenario(5, "split") == sample_scenario(5, "split")
    assert len({scenario_to_dict(sample_scenario(seed))["buyer_max"] for seed in range(20)}) > 5


def test_price_scenarios_have_a_positive_zone_most_of_the_time() -> None:
    scenarios = [sample_scenario(seed) for seed in range(300)]
    assert all(isinstance(s, PriceScenario) and s.zone != 0 and s.seller_min > 0 for s in scenarios)
    positive = sum(s.zone > 0 for s in scenarios if isinstance(s, PriceScenario)) / len(scenarios)
    assert 0.8 <= positive <= 0.97  # the default no_zone_probability is 0.1
    always = [sample_scenario(seed, config=ScenarioConfig(no_zone_probability=0.0)) for seed in range(50)]
    assert all(isinstance(s, PriceScenario) and s.zone > 0 for s in always)


def test_split_scenarios_are_worth_ten_to_each_side_and_every_item_matters() -> None:
    for seed in range(100):
        scenario = sample_scenario(seed, "split")
        assert isinstance(scenario, SplitScenario)
        assert 5 <= sum(scenario.counts) <= 7 and min(scenario.counts) >= 1
        assert scenario.max_value("alice") == scenario.max_value("bob") == 10
        assert all(scenario.values["alice"][i] + scenario.values["bob"][i] > 0 for i in range(3))


def test_bad_scenario_requests_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown negotiation scenario kind 'auction'"):
        sample_scenario(0, "auction")
    with pytest.raises(ValueError, match="no_zone_probability"):
        ScenarioConfig(no_zone_probability=1.5)
    with pytest.raises(ValueError, match="roles must be 'buyer' and 'seller'"):
        PriceScenario("x", 0, roles=("a", "b"))


@pytest.mark.parametrize("kind", ["price", "split"])
def test_scenario_dict_round_trip(kind: str) -> None:
    scenario = sample_scenario(11, kind)
    data = json.loads(json.dumps(scenario_to_dict(scenario)))
    assert scenario_from_dict(data) == scenario
    del data["seed"]
    with pytest.raises(ValueError, match="key 'seed' is missing"):
        scenario_from_dict(data)


# ---- the parser -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "price"),
    [
        ("OFFER 120", "offer", 120.0),
        ("That is my best.\n**Offer:** $1,200.50 for it", "offer", 1200.5),
        ("offer 1.5k", "offer", 1500.0),
        ("Action: counter-offer $99", "offer", 99.0),
        ("REJECT\nOFFER 90", "offer", 90.0),  # the last action line wins: a counter-offer
        ("I can't accept that. OFFER 100", "offer", 100.0),
        ("Sounds fair. ACCEPT", "accept", None),
        ("I accept your offer of $120", "accept", None),  # inline: accept outranks the quoted offer
        ("I'll gladly accept.", "accept", None),
        ("The other side will have to accept a lower price.", "talk", None),  # not the speaker's decision
        ("I do not agree.", "reject", None),
        ("No, I cannot accept this.", "reject", None),  # a negated accept is a reject
        ("walk_away", "walk_away", None),
        ("I'm done. WALK AWAY.", "walk_away", None),
        ("I would never walk away from you", "talk", None),  # negated walk away: no action
        ("Hello there, nice bike!", "talk", None),
    ],
)
def test_parse_price_actions(text: str, kind: str, price: float | None) -> None:
    action = parse_action(text)
    assert (action.type, action.price) == (kind, price)
    assert (action.fallback is None) == (kind != "talk")


@pytest.mark.parametrize(
    ("text", "split"),
    [
        ("OFFER 2 books 1 hat 0 balls", (2, 1, 0)),
        ("OFFER books=2, hats: 1", (2, 1, 0)),  # unmentioned balls: the speaker keeps none
        ("I propose I take two books and a ball", (2, 0, 1)),
        ("OFFER 9 books", (9, 0, 0)),  # parsed as written; the rules find it illegal
    ],
)
def test_parse_split_offers(text: str, split: tuple[int, ...]) -> None:
    action = parse_action(text, ITEMS)
    assert (action.type, action.split) == ("offer", split)


def test_offers_without_terms_are_talk_with_a_reason() -> None:
    assert parse_action("OFFER a fair price").fallback == "offer_without_price"
    assert parse_action("OFFER", ITEMS).fallback == "offer_without_items"
    assert parse_action("").fallback == "no_action"


@settings(max_examples=300, deadline=None)
@given(text=model_outputs("OFFER ", "OFFER $", "books: ", "offer ", "ACCEPT "), split_kind=st.booleans())
def test_parser_never_raises(text: str, split_kind: bool) -> None:
    action = parse_action(text, ITEMS if split_kind else None)
    assert action.type in ("offer", "accept", "reject", "walk_away", "talk")
    assert (action.type == "talk") == (action.fallback is not None)


@settings(max_examples=200, deadline=None)
@given(prose=st.text(max_size=200), price=st.integers(min_value=1, max_value=10**7))
def test_a_final_offer_line_wins_over_any_prose(prose: str, price: int) -> None:
    assert parse_action(f"{prose}\nOFFER ${price:,}") == parse_action(f"OFFER {price}")
    assert parse_action(f"{prose}\nOFFER ${price:,}").price == price


@settings(max_examples=100, deadline=None)
@given(keep=st.tuples(*[st.integers(min_value=0, max_value=4)] * 3), prose=st.text(max_size=100))
def test_split_offer_lines_round_trip(keep: tuple[int, int, int], prose: str) -> None:
    text = f"{prose}\nOFFER {keep[0]} books {keep[1]} hats {keep[2]} balls"
    assert parse_action(text, ITEMS).split == keep


# ---- rules and rewards ----------------------------------------------------------------------------------------


def test_accepting_a_counter_offer_gives_the_hand_computed_shares() -> None:
    state = replay(
        BIKE, [("buyer", "OFFER 200"), ("seller", "Too low. OFFER 240"), ("buyer", "ACCEPT")], RULES
    )
    assert (state.outcome, state.turns, state.deal and state.deal.price) == ("agreement", 3, 240.0)
    rewards = episode_rewards(BIKE, state, RULES)
    # seller: (240 - 150) / 100 = 0.9; buyer: (250 - 240) / 100 = 0.1
    assert rewards == pytest.approx({"seller": 0.9, "buyer": 0.1})


def test_the_seller_accepting_the_buyers_offer() -> None:
    state = replay(BIKE, [("buyer", "OFFER 200"), ("seller", "ACCEPT")], RULES)
    # (200 - 150) / 100 = 0.5 each
    assert episode_rewards(BIKE, state, RULES) == pytest.approx({"seller": 0.5, "buyer": 0.5})


def test_walking_away_gives_no_deal_and_the_configured_value() -> None:
    messages = [("buyer", "OFFER 200"), ("seller", "WALK AWAY"), ("buyer", "ACCEPT")]
    state = replay(BIKE, messages, RULES)
    assert (state.outcome, state.turns, state.deal) == ("walk_away", 2, None)
    assert episode_rewards(BIKE, state, RULES) == {"buyer": 0.0, "seller": 0.0}
    harsh = NegotiationRules(no_deal_reward=-0.25)
    assert episode_rewards(BIKE, state, harsh) == {"buyer": -0.25, "seller": -0.25}


@pytest.mark.parametrize(
    "messages",
    [
        [("buyer", "ACCEPT")],  # nothing on the table
        [("buyer", "OFFER 200"), ("seller", "hmm"), ("buyer", "ACCEPT")],  # only one's own offer
        [
            ("buyer", "OFFER 200"),
            ("seller", "REJECT"),
            ("buyer", "OFFER 210"),
            ("seller", "REJECT"),
            ("buyer", "hmm"),
            ("seller", "ACCEPT"),
        ],  # the rejected offer left the table
    ],  # fmt: skip
)
def test_accept_without_an_offer_from_the_other_side_is_no_deal(messages: list[tuple[str, str]]) -> None:
    state = replay(BIKE, messages, RULES)
    assert (state.outcome, state.deal) == ("accept_without_offer", None)
    assert episode_rewards(BIKE, state, RULES) == {"buyer": 0.0, "seller": 0.0}


def test_accept_without_offer_can_be_ignored_and_recorded() -> None:
    rules = NegotiationRules(accept_without_offer="ignore")
    state = replay(BIKE, [("buyer", "ACCEPT"), ("seller", "OFFER 230"), ("buyer", "ACCEPT")], rules)
    assert state.outcome == "agreement" and state.deal is not None and state.deal.price == 230.0
    assert [(f.turn, f.role, f.reason) for f in state.fallbacks] == [(1, "buyer", "accept_without_offer")]


def test_the_turn_limit_ends_with_no_deal_and_talk_is_recorded() -> None:
    rules = NegotiationRules(max_turns=4)
    state = replay(
        BIKE, [("buyer", "hi"), ("seller", "hello"), ("buyer", "OFFER 200"), ("seller", "hmm")], rules
    )
    assert (state.outcome, state.turns) == ("turn_limit", 4)
    assert [f.reason for f in state.fallbacks] == ["no_action", "no_action", "no_action"]
    assert episode_rewards(BIKE, state, rules) == {"buyer": 0.0, "seller": 0.0}


def test_accepting_an_illegal_offer_is_no_deal() -> None:
    state = replay(BIKE, [("buyer", "OFFER -5"), ("seller", "ACCEPT")], RULES)
    assert (state.outcome, state.illegal_offers) == ("illegal_agreement", 1)
    split = replay(POOL, [("alice", "OFFER 4 books"), ("bob", "ACCEPT")], RULES)  # only 3 books exist
    assert (split.outcome, split.illegal_offers) == ("illegal_agreement", 1)
    assert episode_rewards(POOL, split, RULES) == {"alice": 0.0, "bob": 0.0}


def test_split_deal_values() -> None:
    state = replay(POOL, [("alice", "OFFER 2 books 1 hat 0 balls"), ("bob", "ACCEPT")], RULES)
    # alice keeps 2 books + 1 hat = 2*1 + 1*2 = 4 of 10; bob gets 1 book, 1 hat, 1 ball = 2 + 1 + 2 = 5 of 10.
    assert episode_rewards(POOL, state, RULES) == pytest.approx({"alice": 0.4, "bob": 0.5})


def test_deals_outside_the_zone_are_negative_and_clipped() -> None:
    no_zone = PriceScenario("nz", 0, item="x", list_price=200, buyer_max=140, seller_min=160)
    state = replay(no_zone, [("buyer", "OFFER 150"), ("seller", "ACCEPT")], RULES)
    # scale = |140 - 160| = 20; seller (150 - 160) / 20 = -0.5; buyer (140 - 150) / 20 = -0.5
    assert episode_rewards(no_zone, state, RULES) == pytest.approx({"seller": -0.5, "buyer": -0.5})
    overpaid = replay(BIKE, [("seller", "OFFER 1000"), ("buyer", "ACCEPT")], RULES)
    # seller (1000 - 150) / 100 = 8.5 -> 2.0; buyer (250 - 1000) / 100 = -7.5 -> -1.0 (reward_clip)
    assert episode_rewards(BIKE, overpaid, RULES) == {"seller": 2.0, "buyer": -1.0}


def test_no_move_after_the_end_and_states_serialise() -> None:
    state = replay(POOL, [("alice", "OFFER 1 book"), ("bob", "REJECT"), ("alice", "WALK AWAY")], RULES)
    with pytest.raises(ValueError, match="the negotiation is over"):
        step(POOL, state, "bob", parse_action("ACCEPT", ITEMS), RULES)
    assert NegotiationState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    with pytest.raises(ValueError, match="unknown role 'carol'"):
        step(POOL, NegotiationState(), "carol", parse_action("ACCEPT", ITEMS), RULES)


def test_rules_config_is_validated() -> None:
    with pytest.raises(ValueError, match="max_turns"):
        NegotiationRules(max_turns=0)
    with pytest.raises(ValueError, match="accept_without_offer"):
        NegotiationRules(accept_without_offer="maybe")  # type: ignore[arg-type]


# ---- metrics --------------------------------------------------------------------------------------------------


def test_metrics_over_results() -> None:
    results = [
        NegotiationResult("agreement", 3, {"buyer": 0.1, "seller": 0.9}),
        NegotiationResult("agreement", 5, {"buyer": 0.5, "seller": 0.5}, fallbacks=2),
        NegotiationResult("walk_away", 10, {"buyer": 0.0, "seller": 0.0}),
    ]
    metrics = negotiation_metrics(results)
    assert metrics["agreement_rate"] == pytest.approx(2 / 3)
    assert metrics["turns_to_agreement"] == pytest.approx(4.0)  # (3 + 5) / 2
    assert metrics["surplus_share/buyer"] == pytest.approx(0.3)  # (0.1 + 0.5) / 2, deals only
    assert metrics["reward/buyer"] == pytest.approx(0.2)  # (0.1 + 0.5 + 0) / 3
    assert metrics["surplus_share/seller"] == pytest.approx(0.7)  # (0.9 + 0.5) / 2
    assert metrics["fallbacks_per_episode"] == pytest.approx(2 / 3)
    assert math.isnan(negotiation_metrics(results[2:])["turns_to_agreement"])


def test_result_of_a_replayed_game() -> None:
    state = replay(BIKE, [("buyer", "OFFER 200"), ("seller", "ACCEPT")], RULES)
    assert result_of(BIKE, state, RULES) == NegotiationResult(
        "agreement", 2, {"buyer": 0.5, "seller": 0.5}, 0
    )


# ---- the graph ------------------------------------------------------------------------------------------------


def test_graph_plays_a_scripted_deal_with_hand_computed_rewards() -> None:
    buyer = scripted(["Hi! OFFER 200", "Fine. ACCEPT"])
    seller = scripted(["Too low. OFFER 240"])
    final = build_graph(scenario=BIKE, models={"buyer": buyer, "seller": seller}).invoke({})
    assert [u["action"] for u in final["transcript"]] == [
        {"type": "offer", "price": 200.0},
        {"type": "offer", "price": 240.0},
        {"type": "accept"},
    ]
    assert final["rewards"] == pytest.approx({"seller": 0.9, "buyer": 0.1})  # as in the replayed game above
    assert final["metrics"]["outcome"] == "agreement"
    assert final["metrics"]["deal"] == {"by": "seller", "price": 240.0, "split": []}
    assert result_from_state(final) == NegotiationResult("agreement", 3, final["rewards"], 0)


def test_graph_records_talk_fallbacks_and_walk_away() -> None:
    graph = build_graph(
        scenario=BIKE, models={"buyer": scripted(["Nice bike."]), "seller": scripted(["WALK AWAY"])}
    )
    final = graph.invoke({})
    assert final["metrics"]["outcome"] == "walk_away"
    assert final["rewards"] == {"buyer": 0.0, "seller": 0.0}
    assert [(f["role"], f["fallback"], f["reason"]) for f in final["fallbacks"]] == [
        ("buyer", "talk", "no_action")
    ]


async def test_one_graph_plays_the_scenario_in_its_input_and_hides_private_values() -> None:
    buyer, seller = scripted(["OFFER 100", "ACCEPT"]), scripted(["OFFER 130"])
    graph = build_graph(scenario=BIKE, models={"buyer": buyer, "seller": seller})
    played = PriceScenario("other", 9, item="lamp", list_price=150, buyer_max=140, seller_min=90)
    final = await graph.ainvoke(episode_input(played))
    # (130 - 90) / (140 - 90) = 0.8 for the seller, 0.2 for the buyer: the input's scenario, not BIKE's.
    assert final["rewards"] == pytest.approx({"seller": 0.8, "buyer": 0.2})
    buyer_saw = " ".join(m.text for call in buyer.calls for m in call)
    seller_saw = " ".join(m.text for call in seller.calls for m in call)
    assert "$140" in buyer_saw and "lamp" in buyer_saw and "$90" not in buyer_saw
    assert "$90" in seller_saw and "$140" not in seller_saw


def test_split_graph_and_metrics_over_final_states() -> None:
    graph = build_graph(
        scenario=POOL,
        models={"alice": scripted(["OFFER 2 books 1 hat 0 balls"]), "bob": scripted(["ACCEPT"])},
    )
    finals = [graph.invoke({}), graph.invoke(episode_input(POOL))]
    assert all(final["rewards"] == pytest.approx({"alice": 0.4, "bob": 0.5}) for final in finals)
    assert {"alice", "bob"} <= set(graph.get_graph().nodes)  # one node per role
    metrics = negotiation_metrics(finals)
    assert metrics["agreement_rate"] == 1.0 and metrics["turns_to_agreement"] == 2.0


@pytest.mark.parametrize("kind", ["price", "split"])
def test_the_turn_prompts_example_is_a_legal_offer_in_every_scenario(kind: str) -> None:
    for seed in range(50):
        scenario = sample_scenario(seed, kind)
        for role in scenario.roles:
            example = default_turn_prompt(scenario, role).split("Example reply:\n")[1]
            state = replay(scenario, [(role, example)], RULES)
            assert state.offer is not None and state.offer.legal and not state.fallbacks


def test_the_price_examples_follow_the_public_list_price_seller_above_buyer() -> None:
    for seed in range(20):
        scenario = sample_scenario(seed, "price")
        assert isinstance(scenario, PriceScenario)
        prices = {
            role: float(default_turn_prompt(scenario, role).rsplit("OFFER ", 1)[1]) for role in scenario.roles
        }
        assert prices["seller"] == scenario.list_price > prices["buyer"] > 0


def test_every_call_ends_with_the_turn_prompt_naming_the_standing_offer() -> None:
    buyer, seller = scripted(["OFFER 100", "ACCEPT"]), scripted(["OFFER 130"])
    build_graph(scenario=BIKE, models={"buyer": buyer, "seller": seller}).invoke({})
    opening, answer = (call[-1].text for call in buyer.calls)
    assert opening == default_turn_prompt(BIKE, "buyer")
    assert answer == default_turn_prompt(BIKE, "buyer", Offer("seller", 130.0))
    assert answer.startswith("The seller offers $130.") and answer.endswith("\nACCEPT")
    (seller_call,) = seller.calls
    assert seller_call[-1].text.startswith("The buyer offers $100.")
    quiet = scripted(["OFFER 100", "ACCEPT"])
    graph = build_graph(scenario=BIKE, models={"buyer": quiet, "seller": seller}, turn_prompts={"buyer": ""})
    graph.invoke({})
    assert quiet.calls[0][-1].type == "system"  # no turn prompt: the opener sees only its system prompt


def test_only_the_other_sides_legal_offer_is_standing() -> None:
    def after(*moves: tuple[str, str]) -> dict:
        return {
            "transcript": [
                {"speaker": r, "text": t, "action": action_to_dict(parse_action(t))} for r, t in moves
            ]
        }

    assert standing_offer(after(), "buyer", BIKE, RULES) is None
    assert standing_offer(after(("buyer", "OFFER 100")), "buyer", BIKE, RULES) is None  # its own
    assert standing_offer(after(("seller", "OFFER -5")), "buyer", BIKE, RULES) is None  # illegal
    assert standing_offer(after(("seller", "OFFER 140"), ("buyer", "REJECT")), "buyer", BIKE, RULES) is None
    assert standing_offer(after(("seller", "OFFER 140")), "buyer", BIKE, RULES) == Offer("seller", 140.0)
    split = default_turn_prompt(POOL, "bob", Offer("alice", split=(2, 0, 1)))
    assert split.startswith("Alice offers to keep 2 books, 0 hats, 1 balls, you get the rest.")


def test_briefs_sample_input_and_bad_arguments() -> None:
    scenario = sample_scenario(3, "split")
    assert isinstance(scenario, SplitScenario)
    briefs = role_briefs(scenario)
    assert set(briefs) == {"alice", "bob"}
    assert sample_input(3, "split")["scenario"]["negotiation"] == scenario_to_dict(scenario)
    with pytest.raises(ValueError, match="unknown roles"):
        build_graph(scenario=BIKE, models={"judge": scripted(["x"])})
    with pytest.raises(ValueError, match="final state key 'outcome' is missing"):
        result_from_state({"rewards": {}, "metrics": {}})


@pytest.mark.parametrize("kind", ["price", "split"])
def test_constrained_actions_give_a_legal_action_line_on_every_reply(kind: str) -> None:
    from langgraph_omar import ChatPolicy, SharedPolicy
    from langgraph_omar.envs.negotiation.graph import build_graph
    from langgraph_omar.testing import tiny_model, tiny_tokenizer

    SharedPolicy.register(
        SharedPolicy("tiny-long", tiny_model(context=4096), tiny_tokenizer(), max_wait_ms=5)
    )
    model = ChatPolicy(model="tiny-long", temperature=1.0, max_tokens=260)
    final = build_graph(
        model, kind=kind, rules=NegotiationRules(max_turns=4), constrained_actions=True
    ).invoke(sample_input(1, kind))
    assert final["transcript"] and not final.get("fallbacks")  # a random tiny model, and no reply is talk
    # ACCEPT is offered only when the other side has an offer on the table: never as the first move
    assert final["transcript"][0]["action"]["type"] != "accept"
    assert final["metrics"]["outcome"] != "accept_without_offer"


def test_the_action_line_offers_accept_only_with_an_offer_to_accept() -> None:
    import re

    with_offer, without = (
        action_line_pattern(BIKE, can_accept=True),
        action_line_pattern(BIKE, can_accept=False),
    )
    assert re.fullmatch(with_offer, "Deal.\nACCEPT") and not re.fullmatch(without, "Deal.\nACCEPT")
    for line in ("OFFER 120", "REJECT", "WALK AWAY"):
        assert re.fullmatch(with_offer, f"Hm.\n{line}") and re.fullmatch(without, f"Hm.\n{line}")
