"""MARO's behaviour-level rewards in negotiation: each move scored by the change it makes to its mover's
achievable surplus share, landing as `Turn.reward` on the model call that made it."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, BaseMessage

from langgraph_omar.conversation import ScriptedChatModel
from langgraph_omar.envs.negotiation import build_graph
from langgraph_omar.envs.negotiation.environment import Negotiation
from langgraph_omar.envs.negotiation.rules import NegotiationRules, move_rewards, parse_for
from langgraph_omar.envs.negotiation.scenario import PriceScenario, SplitScenario
from langgraph_omar.tracing import TraceRecorder

# zone = 250 - 150 = 100: an offer at p is worth (p - 150) / 100 to the seller and (250 - p) / 100 to the buyer.
BIKE = PriceScenario("bike", 0, item="bike", list_price=300, buyer_max=250, seller_min=150)
HALF = NegotiationRules(behaviour_rewards=0.5)


def rewards_of(scenario, moves: list[tuple[str, str]], rules: NegotiationRules = HALF) -> list[float]:
    return move_rewards(scenario, [(role, parse_for(scenario, text)) for role, text in moves], rules)


def test_offers_and_concessions_are_scored_by_the_movers_change_in_achievable_share() -> None:
    moves = [("buyer", "OFFER 200"), ("seller", "OFFER 240"), ("buyer", "ACCEPT"), ("seller", "OFFER 250")]
    # buyer: nothing on the table (0) -> own offer worth 0.5 to it: +0.5 x b
    # seller: the buyer's 200 is worth 0.5 to it -> its own 240 is worth 0.9: +0.4 x b
    # buyer: 240 is worth 0.1 to it, the deal at 240 too: 0; a move after the end: 0
    assert rewards_of(BIKE, moves) == pytest.approx([0.25, 0.2, 0.0, 0.0])


def test_shares_are_clamped_between_no_deal_and_the_whole_zone() -> None:
    # the seller's 300 is worth 1.5 -> 1 to it, -0.5 -> 0 (walking away is open) to the buyer, so rejecting it
    # costs the buyer nothing; the seller's 200 after it is worth 0.5 to the seller (nothing was on the table),
    # and walking away from it (worth 0.5 to the buyer) costs the buyer 0.5 x b
    moves = [("seller", "OFFER 300"), ("buyer", "REJECT"), ("seller", "OFFER 200"), ("buyer", "WALK AWAY")]
    assert rewards_of(BIKE, moves) == pytest.approx([0.5, 0.0, 0.25, -0.25])


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
    assert [t.reward for t in episode.turns] == pytest.approx([size * 0.5, size * 0.4, 0.0])
    assert final["rewards"] == pytest.approx({"buyer": 0.1, "seller": 0.9})  # the outcome is unchanged
    assert len(final["turn_rewards"]) == (2 if size else 0)
