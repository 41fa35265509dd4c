"""The SOTOPIA `Environment`: data and subset options, seats agent_1 / agent_2, judge metrics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from langchain_core.language_models import BaseChatModel

from langgraph_omar.envs.environment import JUDGE, Environment, Metric, option
from langgraph_omar.envs.judges import judge_chat_model
from langgraph_omar.envs.sotopia import graph
from langgraph_omar.envs.sotopia.data import SotopiaData, load_builtin_sotopia, load_sotopia
from langgraph_omar.envs.sotopia.judge import SOTOPIA_DIMENSIONS
from langgraph_omar.envs.sotopia.rules import SotopiaRules
from langgraph_omar.trajectory import Episode

SUBSETS = ("all", "hard")


@dataclass
class Sotopia(Environment):
    """SOTOPIA's social scenarios: two characters with private goals talk until a rule ends the episode; a
    judge scores each on 7 dimensions, the reward is goal completion / 10. The judge is a model of its own:
    the commands pass the base model (adapter disabled), never the policy being trained, unless
    `judge_model` names another one (`envs/judges.py`)."""

    name = "sotopia"
    description = "SOTOPIA social scenarios (two characters, private goals), scored by an LLM judge"
    seat_metrics = {
        "reward": Metric("judge: goal completion / 10", kind=JUDGE),
        "judge_overall": Metric("judge: the mean of the 7 dimensions (SOTOPIA's overall score)", kind=JUDGE),
        **{f"judge_{d.name}": Metric(f"judge: {d.instruction}", kind=JUDGE) for d in SOTOPIA_DIMENSIONS},
    }
    game_metrics = {
        "turns": Metric("turns before the episode ended (SOTOPIA has no rule-based outcome)"),
        "judge_failures": Metric("seats the judge could not score"),
    }

    sotopia_data: str | None = option(None, "a SOTOPIA data folder (default: the bundled scenarios)")
    subset: str = option("all", f"scenarios played: {' | '.join(SUBSETS)} (SOTOPIA-hard)")
    max_turns: int | None = option(None, "turns per episode, both characters together (default: 20)")
    judge_model: str | None = option(
        None,
        "the judge's model: a local one (a transformers model directory, a hub id or an embedded name, served "
        "like the policy) or a LangChain chat model as module:attribute (default: the base model)",
    )

    def __post_init__(self) -> None:
        if self.subset not in SUBSETS:
            raise ValueError(f"subset must be one of {list(SUBSETS)}, got {self.subset!r}")
        if self.max_turns is not None and self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        if self.judge_model is not None and not self.judge_model.strip():
            raise ValueError("judge_model must name a model or module:attribute, got an empty string")

    @cached_property
    def data(self) -> SotopiaData:
        return load_sotopia(self.sotopia_data) if self.sotopia_data else load_builtin_sotopia()

    def build_graph(self, model: BaseChatModel, *, judge: BaseChatModel | None = None) -> Any:
        rules = SotopiaRules() if self.max_turns is None else SotopiaRules(max_turns=self.max_turns)
        if self.judge_model is not None:
            judge = judge_chat_model(self.judge_model, served=judge)
        scorer = graph.default_judge(judge) if judge is not None else None
        return graph.build_graph(model=model, rules=rules, judge=scorer)

    def sample_input(self, seed: int) -> dict[str, Any]:
        return graph.sample_input(seed, self.data, hard=self.subset == "hard")

    @property
    def roles(self) -> tuple[str, ...]:
        return graph.ROLES

    def seat_values(self, episode: Episode, seating: Mapping[str, str]) -> dict[str, dict[str, float]]:
        values = super().seat_values(episode, seating)
        for role, scores in episode.reward_dimensions.items():
            seat_scores = values.setdefault(seating.get(role, role), {})
            seat_scores.update({f"judge_{name}": float(score) for name, score in scores.items()})
            if scores:
                seat_scores["judge_overall"] = sum(map(float, scores.values())) / len(scores)
        return values

    def game_values(self, episode: Episode) -> dict[str, float]:
        metrics = episode.metadata.get("metrics") or {}
        values = {"judge_failures": float(len(metrics.get("judge_failures") or []))}
        if isinstance(metrics.get("turns"), (int, float)):
            values["turns"] = float(metrics["turns"])
        return values
