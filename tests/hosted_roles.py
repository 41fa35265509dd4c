"""A conversation graph with the local policy in one role and a hosted chat model in the other (a fake one:
langchain_core's GenericFakeChatModel), as an app's production graph would have; for tracing and training tests."""

from __future__ import annotations

import itertools
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from langgraph_omar import ChatPolicy
from langgraph_omar.conversation import Role, build_conversation_graph

BUYER_LINES = ("OFFER 120. ACCEPT.", "VOTE alice. KILL bob.")  # the hosted buyer's replies, in turn


def hosted_model() -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=itertools.cycle([AIMessage(line) for line in BUYER_LINES]))


def mixed_graph(max_turns: int = 4, rewards: dict[str, float] | None = None) -> Any:
    """seller: ChatPolicy on the registered "tiny" model; buyer: the hosted (fake) model. Rewards in the final
    state are `rewards` (None: the graph writes none)."""
    seller = Role(
        "seller",
        persona="You sell a bike.",
        model=ChatPolicy(model="tiny", temperature=1.0, max_tokens=6),
    )
    buyer = Role("buyer", persona="You buy the bike.", model=hosted_model())
    reward_fn = None if rewards is None else (lambda state: dict(rewards))
    return build_conversation_graph([seller, buyer], max_turns=max_turns, reward_fn=reward_fn)


def seller_wins(episode: Any) -> dict[str, float]:
    """A reward function for `--reward hosted_roles:seller_wins`: a sale, learnt after the episode."""
    return {"seller": 1.0, "buyer": 0.0}


def by_episode_number(episode: Any) -> dict[str, float]:
    """Rewards that rank the episodes of a group: the number at the end of the episode id."""
    number = float(episode.episode_id.rsplit("-", 1)[-1])
    return {"seller": number, "buyer": number}
