"""Why an iteration carries no signal (issue 24 item 9): when degenerate turns dominate, the warning names the
reason, its share and the flag that changes it, and an all-zero batch is blamed on its true cause."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from selfplay_toy import toy_config, toy_policy

from langgraph_omar.conversation.calls import ainvoke_model, stamp_call
from langgraph_omar.envs.registry import load_environment
from langgraph_omar.rl.advantages import EmaBaseline
from langgraph_omar.rl.batch import build_batch, collect_samples
from langgraph_omar.rl.config import AdvantageSettings
from langgraph_omar.rl.selfplay import TrainingWarning, run_selfplay, untrained_reason
from langgraph_omar.rl.signal_reasons import (
    degenerate_explanation,
    degenerate_note,
    degenerate_shares,
    rewards_differ_within_groups,
)
from langgraph_omar.trajectory import Episode, Turn

PAD = 0


def turn(completion: list[int], degenerate: str | None = None, role: str = "a") -> Turn:
    return Turn(
        role=role,
        node=role,
        text="x" * len(completion),
        prompt_ids=[9, 9],
        completion_ids=completion,
        logprobs=[-0.5] * len(completion),
        degenerate=degenerate,
        finish_reason="length" if degenerate == "over_length" else "stop",
    )


def episode(eid: str, turns: list[Turn], reward: float, group: str) -> Episode:
    return Episode(episode_id=eid, turns=turns, rewards={"a": reward}, metadata={"group_id": group})


def capped_app_iteration() -> list[Episode]:
    """The reported app: in group g1 the rewards differ ({0.33, 0, 0.33, 0}) but every turn hit the token cap;
    group g2's turns are fine and its rewards equal."""
    capped = [
        episode(f"g1-{i}", [turn([1, 2], "over_length"), turn([3, 4], "over_length")], r, "g1")
        for i, r in enumerate([0.33, 0.0, 0.33, 0.0])
    ]
    fine = [episode(f"g2-{i}", [turn([5]), turn([6, 7])], 0.5, "g2") for i in range(2)]
    return capped + fine


def test_zero_advantages_from_capped_turns_are_blamed_on_the_cap_not_on_equal_rewards():
    episodes = capped_app_iteration()
    batch = build_batch(episodes, AdvantageSettings(), EmaBaseline(), PAD)
    assert batch is not None and not bool(batch.advantages.abs().sum() > 0)
    reason = untrained_reason(batch, {}, episodes, AdvantageSettings(), max_tokens=48)
    assert reason is not None
    assert "equal rewards" not in reason
    assert reason.startswith("every advantage is zero: rewards differ within groups, but the turns")
    # 8 of 12 turns cut at the cap: the reason, its share, and every setting that changes it
    assert "0.67 of the trained turns are degenerate" in reason
    assert "over_length 0.67: replies cut at the token cap of 48 tokens" in reason
    for flag in ("raise --max-tokens (now 48)", "--no-degenerate.over-length", "--degenerate-penalty"):
        assert flag in reason


def test_equal_rewards_are_still_said_when_they_are_the_cause():
    episodes = [episode(f"e{i}", [turn([1]), turn([2], "repeated")], 1.0, "g") for i in range(2)]
    batch = build_batch(episodes, AdvantageSettings(), EmaBaseline(), PAD)
    assert batch is not None
    reason = untrained_reason(batch, {}, episodes, AdvantageSettings(), max_tokens=48)
    # equal rewards are the cause; half the turns are degenerate too, which is said besides
    assert reason is not None and reason.startswith(
        "every advantage is zero (equal rewards within each group and role); besides, 0.50 of the trained"
    )
    assert "repeated 0.50" in reason and "--no-degenerate.repeated" in reason
    assert "--max-tokens" not in reason  # no reply was cut: raising the cap changes nothing


def test_a_batch_of_only_degenerate_turns_names_the_reasons_and_the_settings():
    episodes = [
        episode("e0", [turn([1], "over_length"), turn([2], "over_length")], 1.0, "g"),
        episode("e1", [turn([3], "over_length"), turn([4], "empty")], 0.0, "g"),
    ]
    batch = build_batch(episodes, AdvantageSettings(), EmaBaseline(), PAD)
    assert batch is not None
    reason = untrained_reason(batch, {}, episodes, AdvantageSettings(), max_tokens=24)
    assert reason is not None and reason.startswith("every turn was degenerate: 1.00 of the trained turns")
    assert "over_length 0.75" in reason and "empty 0.25" in reason
    assert "raise --max-tokens (now 24)" in reason and "--no-degenerate.empty" in reason
    # from files the cap was the recording's: raising --max-tokens is no remedy
    from_files = untrained_reason(batch, {}, episodes, AdvantageSettings(), max_tokens=None)
    assert from_files is not None and "--max-tokens" not in from_files
    assert "--no-degenerate.over-length" in from_files


def test_the_note_speaks_only_when_degenerate_turns_dominate_and_get_no_signal():
    episodes = capped_app_iteration()[:4]  # only the capped group: every turn degenerate
    episodes += [episode("x", [turn([5]), turn([6])], 1.0, "g1")]  # 2 of 10 turns fine, rewards differ
    batch = build_batch(episodes, AdvantageSettings(), EmaBaseline(), PAD)
    assert batch is not None and bool(batch.advantages.abs().sum() > 0)  # it trains...
    assert untrained_reason(batch, {}, episodes, AdvantageSettings(), max_tokens=48) is None
    note = degenerate_note(batch, AdvantageSettings(), max_tokens=48)  # ... on a fifth of its turns
    assert note is not None and note.startswith("0.80 of the trained turns are degenerate and get no signal")
    assert degenerate_note(batch, AdvantageSettings(degenerate_penalty=0.5), 48) is None  # they train
    few = [episode("y", [turn([1]), turn([2]), turn([3], "repeated")], 1.0, "g")]
    few_batch = build_batch(few, AdvantageSettings(), EmaBaseline(), PAD)
    assert few_batch is not None and degenerate_note(few_batch, AdvantageSettings(), 48) is None


def test_shares_and_explanation_by_hand():
    assert degenerate_shares(["over_length", None, "over_length", "repeated"]) == {
        "over_length": 0.5,
        "repeated": 0.25,
    }
    text = degenerate_explanation(["over_length"] * 19 + ["repeated"], max_tokens=16)
    # a reason under a tenth of the turns is listed, but its remedy is not offered
    assert "repeated 0.05" in text and "--no-degenerate.repeated" not in text
    assert text.endswith(
        "raise --max-tokens (now 16), or --no-degenerate.over-length to train on them as they are, "
        "or --degenerate-penalty P (> 0) to train on them with a penalty"
    )


# ---- in a self-play run --------------------------------------------------------------------------------------


class FallbackState(TypedDict, total=False):
    prompt: str
    replies: Annotated[list, operator.add]
    fallbacks: Annotated[list, operator.add]
    rewards: dict


def mostly_fallback_graph(model: Any) -> Any:
    """One role speaks four times; the environment replaces the first three replies by a fallback (off_format),
    so three quarters of the trained turns are degenerate. Reward: the last reply's length."""

    def speak(k: int) -> Any:
        async def run(state: FallbackState, config: RunnableConfig) -> dict[str, Any]:
            prompt = [HumanMessage(f"{state['prompt']} {k}")]
            reply = await ainvoke_model(model, prompt, config, role="speaker")
            update: dict[str, Any] = {"replies": [reply.text]}
            if k < 3:
                update["fallbacks"] = stamp_call([{"fallback": "PASS"}], reply.call_id)
            return update

        return run

    def reward(state: FallbackState) -> dict[str, Any]:
        return {"rewards": {"speaker": len(state["replies"][-1]) / 100}}

    graph = StateGraph(FallbackState)
    previous = START
    for k in range(4):
        graph.add_node(f"s{k}", speak(k), metadata={"role": "speaker"})
        graph.add_edge(previous, f"s{k}")
        previous = f"s{k}"
    graph.add_node("reward", reward)
    graph.add_edge(previous, "reward")
    graph.add_edge("reward", END)
    return graph.compile()


def sample_input(seed: int) -> dict[str, Any]:
    return {"prompt": f"Say something about {seed}."}


def test_a_self_play_iteration_dominated_by_degenerate_turns_says_why_and_what_changes_it(tmp_path):
    environment = load_environment("test_signal_reasons:mostly_fallback_graph")
    config = toy_config(
        0,
        1,
        env={"name": "test_signal_reasons:mostly_fallback_graph"},
        selfplay={"episodes_per_iteration": 4, "group_size": 2, "max_concurrency": 4},
        update={"micro_batch_size": 8},
    )
    with pytest.warns(TrainingWarning) as caught:
        history = run_selfplay(config, tmp_path / "run", environment, policy=toy_policy(), progress=False)
    assert history[0]["degenerate_off_format"] == 12 and "untrained" not in history[0]  # it trained
    messages = [str(w.message) for w in caught if issubclass(w.category, TrainingWarning)]
    assert any(
        m.startswith(
            "iteration 0: 0.75 of the trained turns are degenerate and get no signal (off_format 0.75"
        )
        and "--no-degenerate.off-format" in m
        and "--degenerate-penalty" in m
        for m in messages
    ), messages


def test_agents_of_one_episode_are_not_each_others_difference():
    # Two werewolves of one episode end differently (one exiled early), with one episode per group: their
    # rewards differ, but not between episodes of a group, so they are no baseline of each other.
    wolf_1, wolf_2 = turn([1], "over_length"), turn([2])
    wolf_1.agent, wolf_2.agent = "wolf_1", "wolf_2"
    lone = Episode("e", [wolf_1, wolf_2], rewards={"a": 0.5}, metadata={"group_id": "g"})
    lone.agent_rewards = {"wolf_1": 0.0, "wolf_2": 1.0}
    assert not rewards_differ_within_groups([lone], collect_samples([lone])[0], 1.0)
    other = Episode("f", [turn([3]), turn([4])], rewards={"a": 0.5}, metadata={"group_id": "g"})
    other.turns[0].agent, other.turns[1].agent = "wolf_1", "wolf_2"
    other.agent_rewards = {"wolf_1": 0.0, "wolf_2": 0.0}  # wolf_2 differs from the first episode's wolf_2
    both = [lone, other]
    assert rewards_differ_within_groups(both, collect_samples(both)[0], 1.0)
