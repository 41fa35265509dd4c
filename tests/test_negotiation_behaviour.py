"""MARO's behaviour-level rewards in negotiation: each move scored by the change in its mover's achievable surplus
share from this decision to its next (potential-based, so they telescope), landing as `Turn.reward` on the model
call that made it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage

from langgraph_omar.conversation import ScriptedChatModel
from langgraph_omar.envs.negotiation import build_graph
from langgraph_omar.envs.negotiation.actions import NegotiationAction
from langgraph_omar.envs.negotiation.environment import Negotiation
from langgraph_omar.envs.negotiation.rules import (
    NegotiationRules,
    NegotiationState,
    achievable_share,
    episode_rewards,
    move_rewards,
    offer_shares,
    parse_for,
    step,
)
from langgraph_omar.envs.negotiation.scenario import NegotiationScenario, PriceScenario, SplitScenario
from langgraph_omar.tracing import TraceRecorder

# zone = 250 - 150 = 100: an offer at p is worth (p - 150) / 100 to the seller and (250 - p) / 100 to the buyer.
BIKE = PriceScenario("bike", 0, item="bike", list_price=300, buyer_max=250, seller_min=150)
HALF = NegotiationRules(behaviour_rewards=0.5)


def rewards_of(scenario, moves: list[tuple[str, str]], rules: NegotiationRules = HALF) -> list[float]:
    return move_rewards(scenario, [(role, parse_for(scenario, text)) for role, text in moves], rules)


def test_offers_and_concessions_are_scored_by_the_movers_change_in_achievable_share() -> None:
    moves = [("buyer", "OFFER 200"), ("seller", "OFFER 240"), ("buyer", "ACCEPT"), ("seller", "OFFER 250")]
    # buyer: nothing on the table (0) -> at its next decision the seller's 240, worth 0.1 to it: +0.1 x b
    # seller: the buyer's 200 is worth 0.5 to it -> the game ends in a deal at 240, worth 0.9: +0.4 x b
    # buyer: 240 is worth 0.1 to it, the deal at 240 too: 0; a move after the end: 0
    assert rewards_of(BIKE, moves) == pytest.approx([0.05, 0.2, 0.0, 0.0])


def test_shares_are_clamped_between_no_deal_and_the_whole_zone() -> None:
    # the seller's 300 is worth -0.5 -> 0 (walking away is open) to the buyer, so its reject, answered by the
    # seller's 200 (worth 0.5 to it), earns 0.5 x b, not 1 x b; walking away from the 200 costs it 0.5 x b.
    # The seller decides with nothing on the table both times (the reject took its 300 away) and ends with no deal.
    moves = [("seller", "OFFER 300"), ("buyer", "REJECT"), ("seller", "OFFER 200"), ("buyer", "WALK AWAY")]
    assert rewards_of(BIKE, moves) == pytest.approx([0.0, 0.25, 0.0, -0.25])
    # a game cut short: the seller's own 300 stands at its next decision, worth 1.5 -> 1 (no more than the zone)
    moves = [("seller", "OFFER 300"), ("buyer", "Let me think."), ("seller", "Well?")]
    assert rewards_of(BIKE, moves) == pytest.approx([0.5, 0.0, 0.0])


def test_a_split_concession_and_an_illegal_offer_lower_the_movers_share() -> None:
    pool = SplitScenario("pool", 0, counts=(3, 2, 1), values={"alice": (1, 2, 3), "bob": (2, 1, 2)})
    # alice keeps everything (10/10), then keeps only the books (3/10), then offers more books than exist
    moves = [("alice", "OFFER 3 books 2 hats 1 balls"), ("alice", "OFFER 3 books 0 hats 0 balls")]
    moves.append(("alice", "OFFER 9 books 0 hats 0 balls"))
    assert rewards_of(pool, moves, NegotiationRules(behaviour_rewards=1.0)) == pytest.approx(
        [1.0, -0.7, -0.3]
    )


def test_off_by_default_and_a_negative_size_is_refused() -> None:
    assert rewards_of(BIKE, [("buyer", "OFFER 200")], NegotiationRules()) == [0.0]
    with pytest.raises(ValueError, match="behaviour_rewards must be a number >= 0"):
        NegotiationRules(behaviour_rewards=-1.0)
    with pytest.raises(ValueError, match="behaviour_rewards must be a number >= 0"):
        Negotiation(behaviour_rewards=float("nan"))
    assert Negotiation(behaviour_rewards=0.5, max_turns=4).rules == NegotiationRules(
        max_turns=4, behaviour_rewards=0.5
    )


def scripted(lines: list[str]) -> ScriptedChatModel:
    def respond(messages: list[BaseMessage]) -> str:
        return lines[min(sum(isinstance(m, AIMessage) for m in messages), len(lines) - 1)]

    return ScriptedChatModel(respond=respond, record_tokens=True)


@pytest.mark.parametrize("size", [0.0, 0.5])
def test_each_moves_reward_lands_on_the_turn_of_its_model_call(size: float) -> None:
    buyer, seller = scripted(["I offer 200.\nOFFER 200", "Deal.\nACCEPT"]), scripted(["No.\nOFFER 240"])
    rules = NegotiationRules(behaviour_rewards=size)
    graph = build_graph(scenario=BIKE, models={"buyer": buyer, "seller": seller}, rules=rules)
    with TraceRecorder() as recorder:
        final = graph.invoke({}, {"metadata": {"episode_id": "e"}})
    (episode,) = recorder.trajectories()
    assert [t.role for t in episode.turns] == ["buyer", "seller", "buyer"]
    assert [t.reward for t in episode.turns] == pytest.approx([size * 0.1, size * 0.4, 0.0])
    assert final["rewards"] == pytest.approx({"buyer": 0.1, "seller": 0.9})  # the outcome is unchanged
    assert len(final["turn_rewards"]) == (2 if size else 0)


# ---- potential-based: the opponent's moves are charged, so shaping cannot be farmed -----------------------

# zone = 100 - 60 = 40: an ask of 100 is the whole zone to the seller, an offer of 60 the whole zone to the buyer.
STALL = PriceScenario("stall", 0, item="lamp", list_price=120, buyer_max=100, seller_min=60)


def returns_of(
    scenario: NegotiationScenario, moves: list[tuple[str, NegotiationAction]], rules: NegotiationRules
) -> dict[str, float]:
    """Each role's return with turn_reward_weight 1: its outcome plus its moves' behaviour rewards."""
    state = NegotiationState()
    for role, action in moves:
        if not state.finished:
            state = step(scenario, state, role, action, rules)
    outcome = episode_rewards(scenario, state, rules)
    shaped = move_rewards(scenario, moves, rules)
    return {
        role: outcome[role] + sum(r for (mover, _), r in zip(moves, shaped, strict=True) if mover == role)
        for role in scenario.roles
    }


def test_an_ask_and_offer_ping_pong_without_a_deal_does_not_beat_a_fair_deal() -> None:
    rules = NegotiationRules(behaviour_rewards=0.2, max_turns=10)
    ping_pong = [("seller", "OFFER 100"), ("buyer", "OFFER 60")] * 5
    fair = [("seller", "OFFER 80"), ("buyer", "ACCEPT")]
    stalled = returns_of(STALL, [(role, parse_for(STALL, text)) for role, text in ping_pong], rules)
    dealt = returns_of(STALL, [(role, parse_for(STALL, text)) for role, text in fair], rules)
    assert dealt == pytest.approx({"seller": 0.6, "buyer": 0.5})
    assert stalled == pytest.approx({"seller": 0.0, "buyer": 0.0})


def test_each_moves_reward_runs_to_the_movers_next_decision_so_the_opponents_reply_is_charged() -> None:
    # the seller's ask of 100 is worth 1 to it, but the buyer answers 60 (worth 0 to the seller): the ask's reward
    # is the change from the seller's first decision state (nothing on the table, 0) to its next (the 60, 0)
    moves = [("seller", "OFFER 100"), ("buyer", "OFFER 60"), ("seller", "OFFER 90"), ("buyer", "ACCEPT")]
    rules = NegotiationRules(behaviour_rewards=1.0)
    # seller: 0 -> 0 (the 60) -> 0.75 (the deal at 90); buyer: 0 (the 100) -> 0.25 (the 90) -> 0.25 (the deal)
    assert rewards_of(STALL, moves, rules) == pytest.approx([0.0, 0.25, 0.75, 0.0])


PRICE_ACTIONS = st.one_of(
    st.builds(lambda p: NegotiationAction("offer", price=float(p)), st.integers(-10, 160)),
    st.sampled_from(
        [
            NegotiationAction("reject"),
            NegotiationAction("walk_away"),
            NegotiationAction("talk", fallback="no_action"),
        ]
    ),
)
SPLIT_ACTIONS = st.one_of(
    st.builds(
        lambda keep: NegotiationAction("offer", split=tuple(keep)),
        st.lists(st.integers(0, 4), min_size=3, max_size=3),
    ),
    st.sampled_from([NegotiationAction("reject"), NegotiationAction("walk_away")]),
)
SCENARIOS = st.one_of(
    st.builds(
        lambda low, high: PriceScenario("p", 0, item="x", list_price=150, buyer_max=high, seller_min=low),
        st.integers(20, 120),
        st.integers(20, 120),
    ),
    st.just(SplitScenario("s", 0, counts=(3, 2, 1), values={"alice": (1, 2, 3), "bob": (2, 1, 2)})),
)


@st.composite
def games(
    draw: st.DrawFn,
) -> tuple[NegotiationScenario, NegotiationRules, list[tuple[str, NegotiationAction]]]:
    """A scenario, rules with behaviour rewards, and alternating moves without an ACCEPT (one past the limit)."""
    scenario = draw(SCENARIOS)
    rules = NegotiationRules(
        behaviour_rewards=draw(st.sampled_from([0.2, 0.5, 1.0, 3.0])),
        no_deal_reward=draw(st.sampled_from([0.0, -0.2])),
        max_turns=draw(st.integers(1, 12)),
    )
    actions = SPLIT_ACTIONS if isinstance(scenario, SplitScenario) else PRICE_ACTIONS
    first = draw(st.sampled_from(scenario.roles))
    roles = [first, scenario.other(first)]
    return scenario, rules, [(roles[i % 2], draw(actions)) for i in range(rules.max_turns + 1)]


@settings(max_examples=300, deadline=None)
@given(game=games())
def test_no_sequence_without_a_deal_beats_a_deal_its_mover_could_have_made(
    game: tuple[NegotiationScenario, NegotiationRules, list[tuple[str, NegotiationAction]]],
) -> None:
    scenario, rules, moves = game
    stalled = returns_of(scenario, moves, rules)
    state = NegotiationState()
    for i, (role, action) in enumerate(moves):
        if state.finished:
            break
        standing = state.offer
        # a legal offer from the other side, at least as good as no deal for `role`: accepting it must not lose
        acceptable = standing is not None and standing.role != role and standing.legal
        if acceptable and offer_shares(scenario, standing, rules)[role] >= rules.no_deal_reward:
            dealt = returns_of(scenario, [*moves[:i], (role, NegotiationAction("accept"))], rules)
            assert stalled[role] <= dealt[role] + 1e-9, (moves[: i + 1], stalled, dealt)
        state = step(scenario, state, role, action, rules)


@settings(max_examples=300, deadline=None)
@given(game=games())
def test_a_roles_behaviour_rewards_telescope_to_its_last_potential_minus_its_first(
    game: tuple[NegotiationScenario, NegotiationRules, list[tuple[str, NegotiationAction]]],
) -> None:
    scenario, rules, moves = game
    shaped, first_potential, state = move_rewards(scenario, moves, rules), {}, NegotiationState()
    for role, action in moves:
        if not state.finished:
            first_potential.setdefault(role, achievable_share(scenario, state, role, rules))
            state = step(scenario, state, role, action, rules)
    for role in scenario.roles:
        mine = sum(r for (mover, _), r in zip(moves, shaped, strict=True) if mover == role)
        last = achievable_share(scenario, state, role, rules)
        expected = last - first_potential[role] if role in first_potential else 0.0
        assert mine == pytest.approx(rules.behaviour_rewards * expected, abs=1e-9)
