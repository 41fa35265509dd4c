"""The SOTOPIA environment as a LangGraph graph: two characters pursue private social goals; a judge scores them.

    data = load_sotopia("../shared/data/sotopia")           # or load_builtin_sotopia()
    graph = build_graph(model=ChatPolicy())
    final = graph.invoke(episode_input(data.episodes[0]))
    final["rewards"], final["reward_dimensions"]            # per role: goal / 10, the 7 judge scores

The roles are always "agent_1" and "agent_2" (the episode's first and second character), so one compiled graph
plays every episode and traces name roles consistently; `episode_input` carries the episode's briefs (each
role's own view only), the characters' names and the judge's context. The rules, the visibility and the action
parser are in `sotopia.rules`; the loader in `sotopia.data`; the judge in `judge`.

The default judge asks SOTOPIA's 7-score JSON, one call per agent, in one batch (see `DEFAULT_JUDGE_MAX_TOKENS`);
its calls carry `JUDGE_CONFIG` (role "judge", tag "omar:judge"). A role whose judge output stays unusable after the
retries gets no entry in `rewards` and `reward_dimensions`; `metrics["judge_failures"]` names it,
`metrics["judge_errors"]` says why and `metrics["judge_attempts"]` counts the role's judge calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph

from langgraph_omar.conversation import ActionContext, Outcome, ParsedAction, Role, build_conversation_graph
from langgraph_omar.conversation.state import scenario_of
from langgraph_omar.envs.sotopia.data import SotopiaData, SotopiaEpisode, load_builtin_sotopia
from langgraph_omar.envs.sotopia.judge import SotopiaJudge
from langgraph_omar.envs.sotopia.rules import (
    SotopiaRules,
    agent_view,
    describe_action,
    environment_view,
    parse_sotopia_action,
)

ROLES = ("agent_1", "agent_2")
# The last user message of every call: small models follow a worked example there better than the system prompt.
DEFAULT_TURN_PROMPT = (
    "Reply in character with exactly one action.\nExample reply:\n[speak] Hello! How have you been?"
)
SCENARIO_KEY = "sotopia"  # where the input state's `scenario` carries names and the judge's context
# The judge runs inside the graph's `score` node, so a trace recorder sees its calls: they are marked as the
# "judge" role (and tagged) so that they are never mistaken for a player's turns.
JUDGE_CONFIG: RunnableConfig = {"tags": ["omar:judge"], "metadata": {"role": "judge"}}
# The default judge asks SOTOPIA's JSON, one call per agent, with the score schema as `response_format`: ChatPolicy
# decodes under it, so the 135M default model's answer parses on every call (unaided it parsed 0 of 6 times).
# The compact JSON of seven scores is about 45 tokens; the cap leaves room without letting a model ramble.
DEFAULT_JUDGE_MAX_TOKENS = 64
DEFAULT_JUDGE_RETRIES = 4


def episode_input(episode: SotopiaEpisode, rules: SotopiaRules | None = None) -> dict[str, Any]:
    """The input state that plays `episode`: each role's brief holds only what that character may see."""
    views = [agent_view(episode, index, rules) for index in range(2)]
    return {
        "scenario": {
            "id": episode.combo_id,
            "seed": episode.combo_id,
            "roles": {
                role: {
                    "persona": f"{view.persona}\n\n{view.description}",
                    "goal": view.goal,
                    "private_info": list(view.private_info),
                }
                for role, view in zip(ROLES, views, strict=True)
            },
            SCENARIO_KEY: {
                "env_id": episode.environment.env_id,
                "codename": episode.environment.codename,
                "hard": episode.hard,
                "names": {role: agent.name for role, agent in zip(ROLES, episode.agents, strict=True)},
                "judge_context": environment_view(episode),
            },
        }
    }


def sample_input(seed: int, data: SotopiaData | None = None, hard: bool = False) -> dict[str, Any]:
    """The input of episode `seed` modulo the number of episodes (of the hard subset when `hard`)."""
    data = data or load_builtin_sotopia()
    episodes = data.hard_episodes() if hard else data.episodes
    if not episodes:
        raise ValueError(
            "sample_input: the SOTOPIA data has no episodes" + (" in its hard subset" if hard else "")
        )
    return episode_input(episodes[seed % len(episodes)])


@dataclass(frozen=True)
class SotopiaActionFormat:
    """The conversation `ActionFormat` of SOTOPIA's five action types.

    Parsed action: {"type": one of ACTION_TYPES, "argument": text}; untagged text is spoken (fallback "speak")
    and blank text is `none` (fallback "none"), the reason recorded.
    """

    def instructions(self, context: ActionContext) -> str:
        return (
            "Stay in character. Reply with exactly one action: `[speak] what you say`, "
            "`[non-verbal communication] a gesture or expression`, `[action] a physical action`, "
            "`[leave]` to leave the conversation (when your goal is reached or you want to stop), "
            "or `[none]` to do nothing. Untagged text is spoken."
        )

    def parse(self, text: str, context: ActionContext) -> ParsedAction:
        action = parse_sotopia_action(text)
        fallback = None if action.fallback is None else ("none" if action.type == "none" else "speak")
        return ParsedAction({"type": action.type, "argument": action.argument}, fallback, action.fallback)


def transcript_text(state: Mapping[str, Any]) -> str:
    """The episode's moves in SOTOPIA's style, one line per turn, with the characters' names."""
    names = scenario_of(state).get(SCENARIO_KEY, {}).get("names", {})
    lines = []
    for utterance in state.get("transcript") or []:
        action = utterance["action"]
        name = names.get(utterance["speaker"], utterance["speaker"])
        argument = action.get("argument", utterance["text"])
        lines.append(
            f"Turn #{utterance['turn']}: " + describe_action(name, action.get("type", "speak"), argument)
        )
    return "\n".join(lines) if lines else "(nothing happened)"


def default_judge(model: BaseChatModel) -> SotopiaJudge:
    """The graph's default judge over `model`: one constrained JSON answer per agent, retried with reasons."""
    return SotopiaJudge(model, retries=DEFAULT_JUDGE_RETRIES, max_tokens=DEFAULT_JUDGE_MAX_TOKENS)


def build_graph(
    model: BaseChatModel | None = None,
    scenario: SotopiaEpisode | None = None,
    *,
    rules: SotopiaRules | None = None,
    judge: SotopiaJudge | None = None,
    score: bool = True,
    models: Mapping[str, BaseChatModel] | None = None,
    turn_prompt: str | None = DEFAULT_TURN_PROMPT,
    checkpointer: BaseCheckpointSaver | None = None,
) -> CompiledStateGraph:
    """A compiled SOTOPIA graph: agent_1 and agent_2 alternate until a rule ends the episode, then the judge.

    model: every role's chat model, and the judge's unless `judge` is given (default: `ChatPolicy()`).
    judge: the judge (default: a JSON-mode `SotopiaJudge` over `model`, `DEFAULT_JUDGE_MAX_TOKENS` a call,
        `DEFAULT_JUDGE_RETRIES` retries; pass `SotopiaJudge(model, per_dimension=True)` for one integer per
        dimension, for a model that takes no `response_format` and cannot write the JSON unaided).
    scenario: the episode played when the input has none (default: the first built-in episode).
    rules: turn limit, silence limit, hints (SOTOPIA's defaults: 20 turns, 2 silent turns); `hints` shapes the
        briefs, so pass the same rules to `episode_input` for the episodes you play.
    score: False skips the judge (no rewards), e.g. for collecting transcripts to judge later.
    models: per-role overrides, e.g. {"agent_1": trained, "agent_2": base}.
    """
    rules = rules or SotopiaRules()
    models = dict(models or {})
    unknown = sorted(set(models) - set(ROLES))
    if unknown:
        raise ValueError(f"build_graph: models given for unknown roles {unknown}; roles are {list(ROLES)}")
    if model is None and (len(models) < len(ROLES) or (score and judge is None)):
        from langgraph_omar.chat_model import ChatPolicy  # deferred: loads nothing until a role is called

        model = ChatPolicy()
    default_input = episode_input(scenario or load_builtin_sotopia().episodes[0], rules)["scenario"]
    briefs = default_input["roles"]
    roles = [
        Role(
            name,
            persona=briefs[name]["persona"],
            goal=briefs[name]["goal"],
            private_info=briefs[name]["private_info"],
            model=models.get(name, model),
            action_format=SotopiaActionFormat(),
            turn_prompt=turn_prompt,
        )
        for name in ROLES
    ]
    scorer = None
    if score:
        assert judge is not None or model is not None
        judge_model: BaseChatModel = model  # type: ignore[assignment]  # not None: checked above
        scorer = judge or default_judge(judge_model)

    def outcome(state: Mapping[str, Any]) -> Outcome:
        assert scorer is not None
        info = {**default_input[SCENARIO_KEY], **scenario_of(state).get(SCENARIO_KEY, {})}
        transcript = transcript_text({**state, "scenario": {SCENARIO_KEY: info}})
        rewards: dict[str, float] = {}
        dimensions: dict[str, dict[str, float]] = {}
        failures: list[str] = []
        errors: dict[str, str] = {}
        attempts: dict[str, int] = {}
        names = [info["names"][role] for role in ROLES]
        results = scorer.score_agents(info["judge_context"], transcript, names, config=JUDGE_CONFIG)
        for role, result in zip(ROLES, results, strict=True):
            attempts[role] = result.attempts
            reward = scorer.reward(result)
            if result.scores is None or reward is None:
                failures.append(role)
                errors[role] = result.failure or "no scores"
                continue
            rewards[role] = reward
            dimensions[role] = result.scores
        metrics = {
            "judge_failures": failures,
            "judge_errors": errors,
            "judge_attempts": attempts,
            "env_id": info.get("env_id"),
            "hard": info.get("hard", False),
        }
        return Outcome(rewards=rewards, reward_dimensions=dimensions, metrics=metrics)

    return build_conversation_graph(
        roles,
        turn_order="round_robin",
        max_turns=rules.max_turns,
        max_silent_turns=rules.max_stale_turns,
        leave_ends="any",
        reward_fn=outcome if score else None,
        checkpointer=checkpointer,
        name="sotopia",
    )
