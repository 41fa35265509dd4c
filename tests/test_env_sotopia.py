"""SOTOPIA environment: loader (real and built-in data), tags per viewer, visibility, actions, rules, graph."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage
from model_output_strategies import model_outputs

from langgraph_omar.conversation import ScriptedChatModel
from langgraph_omar.envs.sotopia import ROLES, build_graph, episode_input, sample_input, transcript_text
from langgraph_omar.envs.sotopia.data import (
    SotopiaDataError,
    SotopiaEpisode,
    builtin_sotopia_dir,
    load_builtin_sotopia,
    load_sotopia,
    render_for_viewer,
)
from langgraph_omar.envs.sotopia.judge import SotopiaJudge
from langgraph_omar.envs.sotopia.rules import (
    ACTION_TYPES,
    SotopiaRules,
    agent_view,
    parse_sotopia_action,
    stop_reason,
)

SHARED_SOTOPIA = Path(__file__).parents[1].parent / "shared" / "data" / "sotopia"
needs_shared_data = pytest.mark.skipif(
    not SHARED_SOTOPIA.is_dir(), reason=f"SOTOPIA data not found at {SHARED_SOTOPIA} (../shared/data/sotopia)"
)
GOOD_SCORES = {"believability": 8, "relationship": 1, "knowledge": 3, "secret": 0, "social_rules": 0,
               "financial_and_material_benefits": 0, "goal": 6}  # fmt: skip
GOOD_JUDGE = json.dumps(GOOD_SCORES)  # a JSON-mode judge's answer


def per_dimension_judge(scores: dict[str, int]) -> ScriptedChatModel:
    """Answers the default (per-dimension) judge's request about dimension d with scores[d]."""

    def respond(messages: list[BaseMessage]) -> str:
        found = re.match(r"Score .+? on (\w+), from", messages[-1].text)
        assert found is not None
        return f"Score: {scores[found.group(1)]}"

    return ScriptedChatModel(respond=respond)


def scripted(lines: list[str]) -> ScriptedChatModel:
    """Answers its k-th call (k = its own earlier messages in the transcript) with lines[k]."""

    def respond(messages: list[BaseMessage]) -> str:
        own = sum(isinstance(message, AIMessage) for message in messages)
        return lines[min(own, len(lines) - 1)]

    return ScriptedChatModel(respond=respond)


def seen_by(model: ScriptedChatModel) -> str:
    return "\n".join(message.text for call in model.calls for message in call)


# ---- loader ---------------------------------------------------------------------------------------------------


@needs_shared_data
def test_real_data_yields_the_450_benchmark_episodes_and_70_hard_ones() -> None:
    data = load_sotopia(SHARED_SOTOPIA)
    assert (len(data.environments), len(data.agents)) == (90, 40)
    assert len(data.episodes) == 450
    assert len(data.hard_episodes()) == 70
    assert len({e.environment.env_id for e in data.hard_episodes()}) == 14
    assert all(e.agents[0].agent_id != e.agents[1].agent_id for e in data.episodes)
    # Every pair has a relationship profile; where a pair has two, the one at the environment's level is used.
    assert all(e.relationship is not None for e in data.episodes)
    assert all(e.relationship_level == e.environment.relationship for e in data.episodes)


def test_builtin_scenarios_load() -> None:
    data = load_builtin_sotopia()
    assert len(data.episodes) == 3 and len(data.hard_episodes()) == 1
    assert [e.relationship_level for e in data.episodes] == [0, 2, 3]
    assert data.episode("omar-combo-02").hard
    with pytest.raises(KeyError, match="no SOTOPIA episode"):
        data.episode("nope")


def copy_builtin(tmp_path: Path) -> Path:
    folder = tmp_path / "sotopia"
    shutil.copytree(builtin_sotopia_dir(), folder)
    return folder


def rewrite_line(path: Path, line: int, edit: dict[str, object] | str) -> None:
    lines = path.read_text().splitlines()
    if isinstance(edit, str):
        lines[line - 1] = edit
    else:
        record = json.loads(lines[line - 1])
        for key, value in edit.items():
            if value is None:
                del record[key]
            else:
                record[key] = value
        lines[line - 1] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("file", "line", "edit", "message"),
    [
        ("environment_profiles.jsonl", 2, "{not json", r"environment_profiles.jsonl:2: not valid JSON"),
        ("environment_profiles.jsonl", 1, {"scenario": None}, r"environment_profiles.jsonl:1: key 'scenario': missing"),
        ("environment_profiles.jsonl", 3, {"relationship": "close"}, r":3: key 'relationship': expected an integer"),
        ("environment_profiles.jsonl", 1, {"agent_goals": ["only one"]}, r":1: key 'agent_goals': expected 2 strings"),
        ("agent_profiles.jsonl", 2, {"age": "old"}, r"agent_profiles.jsonl:2: key 'age': expected an integer"),
        ("agent_profiles.jsonl", 1, "[1, 2]", r"agent_profiles.jsonl:1: expected a JSON object, got list"),
        ("relationship_profiles.jsonl", 1, {"relationship": 9}, r":1: key 'relationship': expected an integer in \[0, 5\]"),
        ("env_agent_combo_storages.jsonl", 2, {"env_id": "ghost"}, r"storages.jsonl:2: key 'env_id': unknown environment 'ghost'"),
        ("env_agent_combo_storages.jsonl", 3, {"agent_ids": ["x"]}, r"storages.jsonl:3: key 'agent_ids': expected 2 strings"),
    ],
)  # fmt: skip
def test_a_malformed_file_is_a_one_line_error_naming_file_line_and_key(
    tmp_path: Path, file: str, line: int, edit: dict[str, object] | str, message: str
) -> None:
    folder = copy_builtin(tmp_path)
    rewrite_line(folder / file, line, edit)
    with pytest.raises(SotopiaDataError, match=message) as error:
        load_sotopia(folder)
    assert "\n" not in str(error.value) and str(folder) in str(error.value)


def test_missing_files_and_bad_hard_ids_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SotopiaDataError, match="not a folder"):
        load_sotopia(tmp_path / "absent")
    folder = copy_builtin(tmp_path)
    (folder / "sotopia_hard_env_ids.json").write_text(json.dumps({"sotopia_hard_env_id": ["ghost"]}))
    with pytest.raises(SotopiaDataError, match="key 'sotopia_hard_env_id': unknown environment ids"):
        load_sotopia(folder)
    (folder / "sotopia_hard_env_ids.json").unlink()
    assert load_sotopia(folder).hard_episodes() == ()  # the hard list is optional
    (folder / "agent_profiles.jsonl").unlink()
    with pytest.raises(SotopiaDataError, match="agent_profiles.jsonl: file not found"):
        load_sotopia(folder)


# ---- tags and visibility --------------------------------------------------------------------------------------


def test_tags_are_rendered_per_viewer() -> None:
    goal = "Win (<extra_info>Extra: you have $5.</extra_info> <strategy_hint>Hint: smile.</strategy_hint>)"
    assert render_for_viewer(goal, "agent_1") == "Win (Extra: you have $5. Hint: smile.)"
    assert render_for_viewer(goal, "agent_1", hints=False) == "Win (Extra: you have $5.)"
    hint_only = "Watch a film (<clarification_hint>Hint: keep it secret</clarification_hint>)"
    assert render_for_viewer(hint_only, "agent_2", hints=False) == "Watch a film"
    scenario = (
        'Two strangers meet. <p viewer="environment">They share a friend.</p> <p viewer="agent_2">B only</p>'
    )
    assert render_for_viewer(scenario, "agent_1") == "Two strangers meet."
    assert render_for_viewer(scenario, "agent_2") == "Two strangers meet. B only"
    assert render_for_viewer(scenario, "environment") == "Two strangers meet. They share a friend. B only"
    assert render_for_viewer("<b>bold</b>", "agent_1") == "<b>bold</b>"  # unknown tags are left as they are


def assert_private_to_each_agent(episode: SotopiaEpisode) -> None:
    for index in (0, 1):
        view = agent_view(episode, index)
        seen = "\n".join([view.persona, view.goal, view.description, *view.private_info])
        me, other = episode.agents[index], episode.agents[1 - index]
        own_goal = render_for_viewer(episode.environment.agent_goals[index], f"agent_{index + 1}")
        other_goal = render_for_viewer(episode.environment.agent_goals[1 - index], "environment")
        assert own_goal in seen and me.secret in seen
        if other_goal != own_goal:
            assert other_goal not in seen
        if other.secret != me.secret:
            assert other.secret not in seen
        assert 'viewer="environment"' not in seen and "<extra_info>" not in seen


@needs_shared_data
def test_no_real_episode_shows_an_agent_the_others_goal_or_secret() -> None:
    for episode in load_sotopia(SHARED_SOTOPIA).episodes:
        assert_private_to_each_agent(episode)


def test_what_an_agent_knows_of_the_other_depends_on_their_relationship() -> None:
    strangers, acquaintances, friends = load_builtin_sotopia().episodes  # levels 0, 2, 3
    for episode in (strangers, acquaintances, friends):
        assert_private_to_each_agent(episode)
    stranger_view = agent_view(strangers, 0).description
    assert strangers.agents[1].public_info not in stranger_view
    assert acquaintances.agents[1].public_info in agent_view(acquaintances, 0).description
    assert acquaintances.agents[1].personality_and_values not in agent_view(acquaintances, 0).description
    assert friends.agents[1].personality_and_values in agent_view(friends, 0).description


# ---- actions and rules ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "argument", "fallback"),
    [
        ("[speak] Hello there", "speak", "Hello there", None),
        ("Speak: Hello", "speak", "Hello", None),
        ("<non-verbal communication>smiles</non-verbal communication>", "non-verbal communication", "smiles", None),
        ("(nonverbal) nods", "non-verbal communication", "nods", None),
        ("[action] opens the door", "action", "opens the door", None),
        ("Physical action: hands over the keys", "action", "hands over the keys", None),
        ("[leave]", "leave", "", None),
        ("leave", "leave", "", None),
        ("[none]", "none", "", None),
        ('Sure. {"action_type": "speak", "argument": "Deal!"}', "speak", "Deal!", None),
        ('{"action_type": "leave", "argument": ""}', "leave", "", None),
        ('{"action_type": "dance", "argument": "x"}', "speak", '{"action_type": "dance", "argument": "x"}',
         "unknown_action_type"),
        ("Hi, nice to see you.", "speak", "Hi, nice to see you.", "no_action_tag"),
        ("Leave me alone!", "speak", "Leave me alone!", "no_action_tag"),
        ("[speak]", "none", "", "empty_argument"),
        ("   \n", "none", "", "empty_output"),
    ],
)  # fmt: skip
def test_parse_sotopia_actions(text: str, kind: str, argument: str, fallback: str | None) -> None:
    action = parse_sotopia_action(text)
    assert (action.type, action.argument, action.fallback) == (kind, argument, fallback)


@settings(max_examples=300, deadline=None)
@given(text=model_outputs('{"action_type": ', '{"action_type": "speak", "argument": ', "[speak] "))
def test_sotopia_parser_never_raises(text: str) -> None:
    action = parse_sotopia_action(text)
    assert action.type in ACTION_TYPES
    if action.fallback in ("no_action_tag", "unknown_action_type"):
        assert (action.type, action.argument) == ("speak", text.strip())


def speech(text: str) -> bool:
    """Non-blank, and not starting with ':' (which `[speak]: text` would take as the tag's colon)."""
    return bool(text.strip()) and not text.lstrip().startswith(":")


@settings(max_examples=200, deadline=None)
@given(said=st.text(alphabet=st.characters(blacklist_characters="<{"), max_size=200).filter(speech))
def test_tagged_speech_round_trips(said: str) -> None:
    action = parse_sotopia_action(f"[speak] {said}")
    assert (action.type, action.argument, action.fallback) == ("speak", said.strip(), None)


def test_stop_reasons() -> None:
    rules = SotopiaRules()
    assert stop_reason([("a", "speak"), ("b", "leave")], rules) == "left:b"
    assert stop_reason([("a", "speak"), ("b", "none"), ("a", "none")], rules) == "silence"
    assert stop_reason([("a", "none"), ("b", "speak"), ("a", "none")], rules) is None  # not consecutive
    assert stop_reason([("a", "speak")] * 19, rules) is None
    assert stop_reason([("a", "speak")] * 20, rules) == "max_turns"
    with pytest.raises(ValueError, match="max_stale_turns"):
        SotopiaRules(max_stale_turns=0)


# ---- the graph ------------------------------------------------------------------------------------------------


def test_a_leave_ends_the_episode_and_both_agents_are_judged() -> None:
    episode = load_builtin_sotopia().episodes[0]
    agent_1 = scripted(
        ["[speak] Is this bike for sale?", "[action] checks the tyres", "[leave]", "[speak] again"]
    )
    agent_2 = scripted(["Yes, for $300.", "[none]", "[speak] more"])
    judge = ScriptedChatModel(respond=lambda messages: GOOD_JUDGE)
    # `model` is every role's model and the judge's; both roles are overridden here, so only the judge uses it.
    graph = build_graph(judge, models={"agent_1": agent_1, "agent_2": agent_2})
    final = graph.invoke(episode_input(episode))
    assert [u["action"]["type"] for u in final["transcript"]] == ["speak", "speak", "action", "none", "leave"]
    assert final["stop_reason"] == "left:agent_1"
    assert final["rewards"] == {"agent_1": 0.6, "agent_2": 0.6}  # goal 6 / 10
    assert final["reward_dimensions"]["agent_2"] == {
        name: float(value) for name, value in GOOD_SCORES.items()
    }
    # the default judge: one JSON call per agent
    assert final["metrics"]["judge_attempts"] == {"agent_1": 1, "agent_2": 1}
    assert [(f["role"], f["reason"]) for f in final["fallbacks"]] == [("agent_2", "no_action_tag")]
    assert [metadata["role"] for metadata in judge.call_metadata] == ["judge"] * 2  # not a player's turn
    judged = judge.calls[0][1].text  # the request that carries the context and the interaction
    assert (
        'Lena Okafor said: "Is this bike for sale?"' in judged
        and "Lena Okafor left the conversation" in judged
    )


def test_two_silent_turns_or_the_turn_limit_end_the_episode() -> None:
    silent = build_graph(models={r: scripted(["[none]"]) for r in ROLES}, score=False).invoke({})
    assert (silent["stop_reason"], len(silent["transcript"])) == ("silence", 2)
    assert "rewards" not in silent
    talkative = build_graph(
        models={r: scripted(["[speak] hi"]) for r in ROLES}, score=False, rules=SotopiaRules(max_turns=4)
    ).invoke({})
    assert (talkative["stop_reason"], len(talkative["transcript"])) == ("max_turns", 4)


def test_an_agents_model_never_receives_the_other_agents_goal_or_secret() -> None:
    data = load_builtin_sotopia()
    models = {role: scripted(["[speak] hello", "[speak] and so on"]) for role in ROLES}
    graph = build_graph(models=models, score=False, rules=SotopiaRules(max_turns=4))
    for episode in data.episodes:
        for model in models.values():
            model.calls.clear()
        graph.invoke(episode_input(episode))
        for index, role in enumerate(ROLES):
            me, other = episode.agents[index], episode.agents[1 - index]
            seen = seen_by(models[role])
            other_goal = render_for_viewer(episode.environment.agent_goals[1 - index], "environment")
            assert other_goal not in seen and other.secret not in seen
            assert me.secret in seen
            assert (
                "They have" not in seen and "Only one of them has time" not in seen
            )  # environment-only text


async def test_judge_failure_gives_no_reward_and_is_recorded() -> None:
    judge = ScriptedChatModel(respond=lambda messages: "I think they did well!")
    graph = build_graph(judge, models={r: scripted(["[leave]"]) for r in ROLES})
    final = await graph.ainvoke(sample_input(1))
    assert final["rewards"] == {} and final["reward_dimensions"] == {}
    assert final["metrics"]["judge_failures"] == ["agent_1", "agent_2"]
    # the default judge: 1 + DEFAULT_JUDGE_RETRIES = 4 retries = 5 calls per agent
    assert final["metrics"]["judge_attempts"] == {"agent_1": 5, "agent_2": 5}
    assert "no JSON object found" in final["metrics"]["judge_errors"]["agent_1"]


def test_a_per_dimension_judge_can_replace_the_default_one() -> None:
    judge_model = per_dimension_judge(GOOD_SCORES)
    graph = build_graph(
        models={r: scripted(["[leave]"]) for r in ROLES},
        judge=SotopiaJudge(judge_model, retries=0, per_dimension=True),
    )
    final = graph.invoke(sample_input(0))
    assert final["rewards"] == {"agent_1": 0.6, "agent_2": 0.6}  # goal 6 / 10
    assert final["metrics"]["judge_attempts"] == {"agent_1": 7, "agent_2": 7} and len(judge_model.calls) == 14


def test_transcript_text_and_bad_arguments() -> None:
    state = {
        "scenario": {"sotopia": {"names": {"agent_1": "Ann", "agent_2": "Bo"}}},
        "transcript": [
            {"speaker": "agent_1", "text": "x", "action": {"type": "non-verbal communication", "argument": "waves"},
             "visible_to": None, "turn": 0},
            {"speaker": "agent_2", "text": "[leave]", "action": {"type": "leave", "argument": ""},
             "visible_to": None, "turn": 1},
        ],
    }  # fmt: skip
    assert (
        transcript_text(state)
        == "Turn #0: Ann [non-verbal communication] waves\nTurn #1: Bo left the conversation"
    )
    with pytest.raises(ValueError, match="unknown roles"):
        build_graph(models={"agent_3": scripted(["x"])}, score=False)


@pytest.mark.parametrize("digits", [309, 4301])
def test_a_very_long_number_in_a_json_action_is_read_not_raised(digits: int) -> None:
    action = parse_sotopia_action('{"action_type": "speak", "argument": 1%s}' % ("0" * digits))
    assert (action.type, action.argument) == ("speak", "Infinity")
    assert parse_sotopia_action('{"action_type": 1%s}' % ("0" * digits)).fallback == "unknown_action_type"
