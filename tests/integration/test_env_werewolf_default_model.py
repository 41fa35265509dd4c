"""One round of Werewolf on the real default model, through the LangGraph graph."""

from __future__ import annotations

import pytest

from langgraph_omar import ChatPolicy
from langgraph_omar.envs.werewolf_graph import build_graph

pytestmark = pytest.mark.integration


def test_one_round_on_the_default_model_completes_with_rewards_and_recorded_fallbacks() -> None:
    # The smallest whole game: one night and one vote, no chat, short replies (10 model calls, 6 of them batched).
    rules = {"max_rounds": 1, "werewolf_discussion_rounds": 0, "discussion_rounds": 0}
    final = build_graph(ChatPolicy(max_tokens=8, temperature=0.7), rules=rules).invoke({"seed": 1})
    assert final["finished"] is True and set(final["rewards"]) == set(final["players"])
    # Each decision is either parsed or replaced by a recorded fallback: the counts agree.
    assert (
        final["metrics"]["fallbacks"]
        == len(final["fallbacks"])
        == sum(a["fallback"] for a in final["actions"])
    )
    assert final["metrics"]["decisions"] == len(final["actions"]) > 0
