"""Training configuration: dataclasses whose fields carry help text, validated in `__post_init__`.

A YAML file mirrors `RunConfig`: one mapping per section (`env`, `lora`, `optimizer`, `update`, `advantage`,
`degenerate`, `filter`, `selfplay`, `early_stop`), each holding that section's fields. Unknown sections or keys and bad
values raise `ConfigError` naming the file, the key and what was expected.

    config = RunConfig.from_yaml("training/negotiation.yaml")
    config = config.with_overrides({"selfplay.iterations": 4})
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from langgraph_omar.errors import ConfigError, first_line
from langgraph_omar.serving.settings import SamplingSettings

__all__ = ["ConfigError", "RunConfig"]  # ConfigError lives in errors.py; imported from here too

ADVANTAGE_MODES = ("hierarchical", "hierarchical-critic", "grpo", "rloo", "rae")
ALGORITHMS = ("ppo", "filtered-bc", "sft")
SCHEDULERS = ("constant", "linear", "cosine")
WHITEN_MODES = ("auto", "role", "role-scale", "batch", "none")
KL_ESTIMATORS = ("k1", "k2", "k3")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
BEHAVIOUR_CLONING = ("sft", "filtered-bc")
OLD_LOGPROBS = ("auto", "rollout", "recompute")
SERVING_DTYPES = ("auto", "float32", "bfloat16")

# The defaults of the keys a run leaves unset (None): a PPO iteration's, and behaviour cloning's from files, which
# are TRL SFTTrainer's 3 epochs over the whole data at the LoRA rate of the recipes (5e-4); measured with
# benchmarks/sft_from_files.py: +0.76 nats per token of the expert's text against +0.07 with a PPO iteration's.
DEFAULT_EPOCHS = 1
DEFAULT_LEARNING_RATE = 1e-4
FILES_BC_EPOCHS = 3
FILES_BC_LEARNING_RATE = 5e-4


def _help(text: str) -> dict[str, str]:
    return {"help": text}


def _require(condition: bool, key: str, expected: str, value: Any) -> None:
    if not condition:
        raise ConfigError(f"{key} must be {expected}, got {value!r}")


@dataclass
class LoraSettings:
    rank: int = field(default=8, metadata=_help("LoRA rank r (SOTOPIA-pi used 8)"))
    alpha: int = field(default=16, metadata=_help("LoRA scaling alpha (SOTOPIA-pi used 16)"))
    dropout: float = field(
        default=0.0, metadata=_help("LoRA dropout; 0 keeps the PPO ratio at exactly 1 before the first step")
    )
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        metadata=_help("module names that get LoRA layers, or ['all-linear']"),
    )

    def __post_init__(self) -> None:
        _require(self.rank >= 1, "lora.rank", ">= 1", self.rank)
        _require(self.alpha > 0, "lora.alpha", "> 0", self.alpha)
        _require(0.0 <= self.dropout < 1.0, "lora.dropout", "in [0, 1)", self.dropout)
        _require(
            bool(self.target_modules) and all(isinstance(m, str) for m in self.target_modules),
            "lora.target_modules",
            "a non-empty list of module names",
            self.target_modules,
        )


@dataclass
class OptimizerSettings:
    learning_rate: float | None = field(
        default=None,
        metadata=_help(
            f"AdamW learning rate of the trainable params (unset: {DEFAULT_LEARNING_RATE:g}; sft and filtered-bc "
            f"from files: {FILES_BC_LEARNING_RATE:g})"
        ),
    )
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay"))
    beta1: float = field(default=0.9, metadata=_help("AdamW beta1"))
    beta2: float = field(default=0.999, metadata=_help("AdamW beta2"))
    eps: float = field(default=1e-8, metadata=_help("AdamW epsilon"))
    scheduler: str = field(default="constant", metadata=_help(f"learning-rate schedule, one of {SCHEDULERS}"))
    warmup_steps: int = field(default=0, metadata=_help("optimizer steps of linear warm-up from 0"))
    total_steps: int = field(
        default=1000, metadata=_help("horizon of the linear/cosine decay, in optimizer steps")
    )
    max_grad_norm: float = field(default=1.0, metadata=_help("clip the global grad norm to this (0: off)"))

    def __post_init__(self) -> None:
        _require(
            self.learning_rate is None or self.learning_rate > 0,
            "optimizer.learning_rate",
            "> 0",
            self.learning_rate,
        )
        _require(self.weight_decay >= 0, "optimizer.weight_decay", ">= 0", self.weight_decay)
        _require(
            0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "optimizer.beta1/beta2", "in [0, 1)", self.beta1
        )
        _require(self.eps > 0, "optimizer.eps", "> 0", self.eps)
        _require(self.scheduler in SCHEDULERS, "optimizer.scheduler", f"one of {SCHEDULERS}", self.scheduler)
        _require(self.warmup_steps >= 0, "optimizer.warmup_steps", ">= 0", self.warmup_steps)
        _require(self.total_steps >= 1, "optimizer.total_steps", ">= 1", self.total_steps)
        _require(self.max_grad_norm >= 0, "optimizer.max_grad_norm", ">= 0", self.max_grad_norm)

    @property
    def resolved_learning_rate(self) -> float:
        """`learning_rate`, or a PPO iteration's when unset."""
        return DEFAULT_LEARNING_RATE if self.learning_rate is None else self.learning_rate


@dataclass
class UpdateSettings:
    algo: str = field(
        default="ppo",
        metadata=_help(
            f"update rule, one of {ALGORITHMS}; sft: behaviour cloning of every turn (self-play: every "
            "well-formed one, as in the warm start)"
        ),
    )
    epochs: int | None = field(
        default=None,
        metadata=_help(
            f"passes over the data: over each iteration's batch (unset: {DEFAULT_EPOCHS}), or for sft and "
            f"filtered-bc from files over the whole file, one pass an iteration (unset: {FILES_BC_EPOCHS})"
        ),
    )
    micro_batch_size: int = field(default=4, metadata=_help("sequences (turns) per forward pass"))
    gradient_accumulation_steps: int = field(
        default=4, metadata=_help("micro-batches per optimizer step (accelerate's accumulation)")
    )
    clip_eps: float = field(default=0.2, metadata=_help("PPO ratio clip epsilon"))
    clip_eps_high: float | None = field(default=None, metadata=_help("upper clip (DAPO); default clip_eps"))
    kl_coef: float = field(default=0.0, metadata=_help("weight of KL(policy || adapter-disabled base)"))
    kl_estimator: str = field(default="k3", metadata=_help(f"KL estimator, one of {KL_ESTIMATORS}"))
    value_coef: float = field(default=0.5, metadata=_help("weight of the value loss (hierarchical-critic)"))
    value_clip: float | None = field(default=None, metadata=_help("value clip epsilon, None: no clipping"))
    value_fit: bool = field(
        default=True,
        metadata=_help(
            "critic mode: after each warm-start iteration, fit the value head alone (LoRA frozen) to the Monte "
            "Carlo returns of that iteration's turns (ridge regression, strength chosen on held-out episodes), "
            "so that PPO starts with a fitted critic; off: the head starts PPO at zero"
        ),
    )
    chunk_size: int = field(
        default=256, metadata=_help("positions per chunk of the chunked log-softmax (memory vs kernel size)")
    )
    mixed_precision: str = field(
        default="auto",
        metadata=_help(
            f"{MIXED_PRECISION} (accelerate's autocast of the update); auto: bf16 on a GPU and on a CPU with "
            "bf16 dot products (avx512_bf16 or amx_bf16), no elsewhere"
        ),
    )
    old_logprobs: str = field(
        default="auto",
        metadata=_help(
            f"{OLD_LOGPROBS}: the PPO ratio's old log-probabilities; recompute: one no-grad pass with the "
            "update's numerics before the first step, so the ratio starts at 1; rollout: the recorded sampling "
            "ones; auto: recompute when the update runs under mixed precision"
        ),
    )
    tis_cap: float | None = field(
        default=2.0,
        metadata=_help(
            "truncated importance sampling (as TRL and verl correct a sampler/trainer gap): with recomputed old "
            "log-probabilities each token's loss is weighted by min(pi_train_old / pi_rollout, tis_cap); "
            "None: no correction"
        ),
    )
    gradient_checkpointing: bool = field(default=False, metadata=_help("recompute activations in backward"))
    shared_prefix: bool = field(
        default=True,
        metadata=_help(
            "order each update's rows by shared prompt prefix (clusters in random order) and run a micro-batch's "
            "common prefix once, its keys and values repeated for the rows (exact; off under "
            "gradient_checkpointing); off: rows in random order, every row run whole"
        ),
    )
    skip_zero_advantage: bool = field(
        default=True,
        metadata=_help(
            "skip turns whose tokens all have advantage 0 (no gradient) when kl_coef is 0; the loss is then "
            "a mean over the trained turns' tokens"
        ),
    )
    warm_start_iterations: int = field(
        default=0,
        metadata=_help(
            "OMAR's short SFT warm start: the first N iterations clone every well-formed (non-degenerate) turn "
            "of the policy's own episodes (behaviour cloning); `algo` takes over after them"
        ),
    )
    seed: int = field(default=0, metadata=_help("seed of python, numpy and torch RNGs at the start"))
    init_adapter: str | None = field(
        default=None,
        metadata=_help(
            "start from this LoRA adapter directory (e.g. a behaviour-cloning run's RUN/adapter) instead of a "
            "fresh one; its rank, alpha and target modules must match the lora section"
        ),
    )

    def __post_init__(self) -> None:
        _require(self.algo in ALGORITHMS, "update.algo", f"one of {ALGORITHMS}", self.algo)
        _require(
            self.warm_start_iterations >= 0,
            "update.warm_start_iterations",
            ">= 0",
            self.warm_start_iterations,
        )
        _require(self.epochs is None or self.epochs >= 1, "update.epochs", ">= 1", self.epochs)
        _require(self.micro_batch_size >= 1, "update.micro_batch_size", ">= 1", self.micro_batch_size)
        _require(
            self.gradient_accumulation_steps >= 1,
            "update.gradient_accumulation_steps",
            ">= 1",
            self.gradient_accumulation_steps,
        )
        _require(self.clip_eps > 0, "update.clip_eps", "> 0", self.clip_eps)
        _require(
            self.clip_eps_high is None or self.clip_eps_high > 0,
            "update.clip_eps_high",
            "> 0",
            self.clip_eps_high,
        )
        _require(self.kl_coef >= 0, "update.kl_coef", ">= 0", self.kl_coef)
        _require(
            self.kl_estimator in KL_ESTIMATORS,
            "update.kl_estimator",
            f"one of {KL_ESTIMATORS}",
            self.kl_estimator,
        )
        _require(self.value_coef >= 0, "update.value_coef", ">= 0", self.value_coef)
        _require(self.value_clip is None or self.value_clip > 0, "update.value_clip", "> 0", self.value_clip)
        _require(self.chunk_size >= 1, "update.chunk_size", ">= 1", self.chunk_size)
        _require(
            self.mixed_precision in MIXED_PRECISION,
            "update.mixed_precision",
            f"one of {MIXED_PRECISION}",
            self.mixed_precision,
        )
        _require(
            self.old_logprobs in OLD_LOGPROBS,
            "update.old_logprobs",
            f"one of {OLD_LOGPROBS}",
            self.old_logprobs,
        )
        _require(self.tis_cap is None or self.tis_cap >= 1.0, "update.tis_cap", ">= 1 or None", self.tis_cap)

    @property
    def resolved_epochs(self) -> int:
        """`epochs`, or a PPO iteration's when unset."""
        return DEFAULT_EPOCHS if self.epochs is None else self.epochs


@dataclass
class AdvantageSettings:
    mode: str = field(
        default="hierarchical",
        metadata=_help(
            f"advantage estimator, one of {ADVANTAGE_MODES}: hierarchical (each turn's return against its group's "
            "at the same turn position), hierarchical-critic (OMAR: value head + hierarchical GAE), grpo (the "
            "episode return normalised in its group), rloo (the episode return minus the mean of the group's "
            "other episodes), rae (SPIRAL: the episode return minus an EMA baseline)"
        ),
    )
    gamma_turn: float = field(default=1.0, metadata=_help("discount between a role's turns"))
    lam_turn: float = field(default=0.95, metadata=_help("GAE lambda between turns (critic mode)"))
    gamma_token: float = field(default=1.0, metadata=_help("discount between tokens of a turn"))
    lam_token: float = field(default=1.0, metadata=_help("GAE lambda between tokens (critic mode)"))
    ema_decay: float = field(default=0.95, metadata=_help("SPIRAL's baseline decay: b <- d b + (1 - d) R"))
    role_balance: bool = field(default=True, metadata=_help("MARO: every role carries equal loss weight"))
    inverse_win_rate: bool = field(
        default=False, metadata=_help("MARO: weight roles by 1 / win rate (win: reward > win_threshold)")
    )
    win_threshold: float = field(default=0.5, metadata=_help("a role 'wins' an episode above this reward"))
    whiten: str = field(
        default="auto",
        metadata=_help(
            f"{WHITEN_MODES}: role and batch centre and divide by the std, role-scale divides each role's "
            "advantages by their std (an advantage of 0 stays 0); auto: role in critic mode, role-scale in "
            "hierarchical mode (its G - b of group and EMA positions put on one scale), else none"
        ),
    )
    eps: float = field(default=1e-6, metadata=_help("added to group standard deviations"))
    degenerate_penalty: float = field(
        default=0.0,
        metadata=_help(
            "0: degenerate turns get no policy signal (advantage 0, in every mode); p > 0: their turn reward is "
            "lowered by p instead and they train (a format penalty, for outcome rewards that are almost always 0)"
        ),
    )
    turn_reward_weight: float = field(
        default=1.0,
        metadata=_help(
            "MARO's behaviour-level rewards: turn k's reward is r_k = w * Turn.reward (set by the environment) "
            "+ the role's terminal reward on its last turn; 0 trains on the outcome alone"
        ),
    )

    def __post_init__(self) -> None:
        _require(
            self.turn_reward_weight >= 0, "advantage.turn_reward_weight", ">= 0", self.turn_reward_weight
        )
        _require(
            self.degenerate_penalty >= 0, "advantage.degenerate_penalty", ">= 0", self.degenerate_penalty
        )
        _require(self.mode in ADVANTAGE_MODES, "advantage.mode", f"one of {ADVANTAGE_MODES}", self.mode)
        for name in ("gamma_turn", "lam_turn", "gamma_token", "lam_token"):
            value = getattr(self, name)
            _require(0.0 <= value <= 1.0, f"advantage.{name}", "in [0, 1]", value)
        _require(0.0 <= self.ema_decay < 1.0, "advantage.ema_decay", "in [0, 1)", self.ema_decay)
        _require(self.whiten in WHITEN_MODES, "advantage.whiten", f"one of {WHITEN_MODES}", self.whiten)
        _require(self.eps > 0, "advantage.eps", "> 0", self.eps)

    @property
    def whiten_mode(self) -> str:
        if self.whiten != "auto":
            return self.whiten
        return {"hierarchical-critic": "role", "hierarchical": "role-scale"}.get(self.mode, "none")


@dataclass
class DegenerateSettings:
    empty: bool = field(default=True, metadata=_help("a turn with no text is degenerate"))
    over_length: bool = field(
        default=True, metadata=_help("a turn cut at max_tokens (or closed early to end by it) is degenerate")
    )
    off_format: bool = field(
        default=True, metadata=_help("a turn the env replaced by a fallback is degenerate")
    )
    repeated: bool = field(
        default=True, metadata=_help("a turn repeating the role's earlier turn, or itself, is degenerate")
    )
    min_repeat_chars: int = field(
        default=20,
        metadata=_help("a repeat of an earlier turn counts from this many characters (not 'ACCEPT')"),
    )
    ngram: int = field(default=4, metadata=_help("n of the n-grams checked for self-repetition"))
    max_repeated_ngram_fraction: float = field(
        default=0.5,
        metadata=_help("self-repetition: share of repeated n-grams above which a turn is degenerate"),
    )

    def __post_init__(self) -> None:
        _require(self.ngram >= 1, "degenerate.ngram", ">= 1", self.ngram)
        _require(self.min_repeat_chars >= 0, "degenerate.min_repeat_chars", ">= 0", self.min_repeat_chars)
        _require(
            0.0 < self.max_repeated_ngram_fraction <= 1.0,
            "degenerate.max_repeated_ngram_fraction",
            "in (0, 1]",
            self.max_repeated_ngram_fraction,
        )


@dataclass
class FilterSettings:
    top_fraction: float = field(
        default=0.2, metadata=_help("filtered-bc: keep this top share of episodes per group and role")
    )
    min_reward: float | None = field(
        default=None,
        metadata=_help("filtered-bc and the warm start: keep only a role's episodes with reward >= this"),
    )

    def __post_init__(self) -> None:
        _require(0.0 < self.top_fraction <= 1.0, "filter.top_fraction", "in (0, 1]", self.top_fraction)


@dataclass
class EnvSettings:
    name: str = field(
        default="",
        metadata=_help("the environment: a registered name (`omar envs` lists them) or module:attribute"),
    )
    options: dict[str, Any] = field(
        default_factory=dict,
        metadata=_help("the environment's own options, e.g. {kind: split, max_turns: 6} (`omar envs NAME`)"),
    )


@dataclass(kw_only=True)
class SelfPlaySettings(SamplingSettings):
    """The self-play rounds, and the sampling of every role (`model`, `top_p` and the checks come from
    `SamplingSettings`, the fields `omar rollout` and `omar eval` share)."""

    key_prefix = "selfplay."

    temperature: float = field(
        default=1.0,
        metadata=_help(
            "sampling temperature of every role; 1.0, not rollout's and eval's 0.7: at 1.0 the policy samples "
            "from its own distribution, the one PPO's ratio and the KL are taken against"
        ),
    )
    max_tokens: int = field(
        default=48, metadata=_help("most new tokens per turn (the recipes were tuned with 48)")
    )
    iterations: int = field(default=10, metadata=_help("rollout + update rounds"))
    episodes_per_iteration: int = field(default=16, metadata=_help("episodes per iteration (M)"))
    group_size: int = field(default=4, metadata=_help("episodes per sampled scenario seed, one group (G)"))
    max_concurrency: int = field(default=16, metadata=_help("episodes run at once (batched by the engine)"))
    seed: int = field(default=0, metadata=_help("first scenario seed; iteration i uses later seeds"))
    max_minutes: float | None = field(
        default=None,
        metadata=_help(
            "wall-time budget: stop before an iteration that would end past it (judged by the longest "
            "iteration so far); None: no limit"
        ),
    )
    base_opponent_fraction: float = field(
        default=0.0,
        metadata=_help(
            "share of each iteration's groups in which one role (taken in turn from base_opponent_roles) is "
            "played by the base model, adapter disabled: the opponent an arena evaluation measures against. "
            "Only the other roles' turns train"
        ),
    )
    base_opponent_roles: list[str] = field(
        default_factory=list, metadata=_help("the roles the base model takes in turn (e.g. [buyer, seller])")
    )
    prefill_dtype: str = field(
        default="auto",
        metadata=_help(
            f"{SERVING_DTYPES}: the engine's prompt prefill (autocast); auto: bf16 on a GPU and on a CPU with "
            "bf16 dot products, float32 elsewhere"
        ),
    )
    decode_dtype: str = field(
        default="auto",
        metadata=_help(
            f"{SERVING_DTYPES}: the served weights' type, in which every decoding step runs (used when this "
            "run loads the model); auto: bf16 on a GPU and on a CPU with AMX tiles (amx_bf16), float32 elsewhere"
        ),
    )
    checkpoint_every: int = field(default=1, metadata=_help("save a checkpoint every N iterations"))
    keep_checkpoints: int = field(default=2, metadata=_help("checkpoints kept on disk (newest)"))
    log_with: list[str] | None = field(
        default=None,
        metadata=_help(
            "experiment trackers that get every metrics.jsonl line (accelerate's `log_with`: tensorboard, "
            "wandb, mlflow, ...); None: tensorboard when installed; []: none"
        ),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(
            0.0 <= self.base_opponent_fraction <= 1.0,
            "selfplay.base_opponent_fraction",
            "in [0, 1]",
            self.base_opponent_fraction,
        )
        _require(
            self.base_opponent_fraction == 0.0 or bool(self.base_opponent_roles),
            "selfplay.base_opponent_roles",
            "a non-empty list of role names when base_opponent_fraction > 0",
            self.base_opponent_roles,
        )
        for name in ("iterations", "episodes_per_iteration", "group_size", "max_concurrency"):
            _require(getattr(self, name) >= 1, f"selfplay.{name}", ">= 1", getattr(self, name))
        _require(
            self.episodes_per_iteration % self.group_size == 0,
            "selfplay.episodes_per_iteration",
            f"a multiple of group_size ({self.group_size})",
            self.episodes_per_iteration,
        )
        _require(
            self.max_minutes is None or self.max_minutes > 0, "selfplay.max_minutes", "> 0", self.max_minutes
        )
        for name in ("prefill_dtype", "decode_dtype"):
            value = getattr(self, name)
            _require(value in SERVING_DTYPES, f"selfplay.{name}", f"one of {SERVING_DTYPES}", value)
        _require(self.checkpoint_every >= 1, "selfplay.checkpoint_every", ">= 1", self.checkpoint_every)
        _require(self.keep_checkpoints >= 1, "selfplay.keep_checkpoints", ">= 1", self.keep_checkpoints)


@dataclass
class EarlyStopSettings:
    """OMAR's reward-hacking alarms (rl/alarms.py, docs/design.md §4): they always warn and record `alarm_*`
    metrics; only `stop_on_alarm` ends a run."""

    stop_on_alarm: bool = field(
        default=False,
        metadata=_help(
            "end the run (checkpoint and adapter saved) once an alarm has fired `patience` iterations in a row; "
            "false: alarms only warn and appear in the metrics"
        ),
    )
    patience: int = field(
        default=3, metadata=_help("iterations in a row an alarm fires before the run stops")
    )
    reference_iterations: int = field(
        default=2,
        metadata=_help(
            "the first N iterations that report a watched metric set its reference; alarms start after"
        ),
    )
    min_entropy_ratio: float = field(
        default=0.25,
        metadata=_help(
            "entropy collapse: the policy's token entropy below this share of its reference (0: off)"
        ),
    )
    min_length_ratio: float = field(
        default=0.25,
        metadata=_help(
            "length collapse: mean tokens per policy turn below this share of its reference (0: off)"
        ),
    )
    max_degenerate_increase: float = field(
        default=0.25,
        metadata=_help(
            "degenerate share: the share of the policy's turns that are degenerate exceeds its reference by more "
            "than this (1: off)"
        ),
    )
    max_judge_gap_increase: float | None = field(
        default=0.2,
        metadata=_help(
            "judge/outcome gap: mean(judge - outcome) over the policy's roles whose reward_dimensions carry both "
            "exceeds its reference by more than this, in reward units (None: off)"
        ),
    )

    def __post_init__(self) -> None:
        _require(self.patience >= 1, "early_stop.patience", ">= 1", self.patience)
        _require(
            self.reference_iterations >= 1,
            "early_stop.reference_iterations",
            ">= 1",
            self.reference_iterations,
        )
        for name in ("min_entropy_ratio", "min_length_ratio", "max_degenerate_increase"):
            value = getattr(self, name)
            _require(0.0 <= value <= 1.0, f"early_stop.{name}", "in [0, 1]", value)
        _require(
            self.max_judge_gap_increase is None or self.max_judge_gap_increase > 0,
            "early_stop.max_judge_gap_increase",
            "> 0",
            self.max_judge_gap_increase,
        )


SECTIONS: dict[str, type] = {
    "env": EnvSettings,
    "lora": LoraSettings,
    "optimizer": OptimizerSettings,
    "update": UpdateSettings,
    "advantage": AdvantageSettings,
    "degenerate": DegenerateSettings,
    "filter": FilterSettings,
    "selfplay": SelfPlaySettings,
    "early_stop": EarlyStopSettings,
}


@dataclass
class RunConfig:
    env: EnvSettings = field(default_factory=EnvSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    update: UpdateSettings = field(default_factory=UpdateSettings)
    advantage: AdvantageSettings = field(default_factory=AdvantageSettings)
    degenerate: DegenerateSettings = field(default_factory=DegenerateSettings)
    filter: FilterSettings = field(default_factory=FilterSettings)
    selfplay: SelfPlaySettings = field(default_factory=SelfPlaySettings)
    early_stop: EarlyStopSettings = field(default_factory=EarlyStopSettings)

    def __post_init__(self) -> None:
        if self.advantage.mode in ("grpo", "rloo") and self.selfplay.group_size < 2:
            raise ConfigError(
                f"advantage.mode {self.advantage.mode!r} needs selfplay.group_size >= 2 "
                "(a group of one has A = 0)"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> RunConfig:
        """Build from nested mappings; unknown sections/keys and bad values raise ConfigError."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a mapping of sections {sorted(SECTIONS)}, got {data!r}")
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"{source}: unknown section(s) {unknown}; expected some of {sorted(SECTIONS)}")
        sections = {}
        for name, section_cls in SECTIONS.items():
            values = data.get(name) or {}
            if not isinstance(values, Mapping):
                raise ConfigError(f"{source}: section {name!r} must be a mapping, got {values!r}")
            sections[name] = _build_section(section_cls, values, f"{source}: {name}")
        try:
            return cls(**sections)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as error:
            raise ConfigError(f"cannot read config {path}: {error.strerror}") from None
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({first_line(error)})") from None
        return cls.from_dict(data, source=str(path))

    def resolved(self, files_bc: bool = False) -> RunConfig:
        """A copy with the keys left unset (`update.epochs`, `optimizer.learning_rate`) filled: with a PPO
        iteration's defaults, or with `files_bc` behaviour cloning's from files (TRL SFTTrainer's epochs over
        the whole file, a LoRA learning rate)."""
        epochs = FILES_BC_EPOCHS if files_bc else DEFAULT_EPOCHS
        rate = FILES_BC_LEARNING_RATE if files_bc else DEFAULT_LEARNING_RATE
        update, optimizer = self.update, self.optimizer
        return dataclasses.replace(
            self,
            update=dataclasses.replace(update, epochs=epochs if update.epochs is None else update.epochs),
            optimizer=dataclasses.replace(
                optimizer, learning_rate=rate if optimizer.learning_rate is None else optimizer.learning_rate
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def with_overrides(self, overrides: Mapping[str, Any]) -> RunConfig:
        """A copy with `{"section.key": value}` overrides applied (None values are ignored)."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            if value is None:
                continue
            section, _, key = dotted.partition(".")
            if section not in data or key not in data[section]:
                raise ConfigError(f"override {dotted!r}: no such config key")
            data[section][key] = value
        return RunConfig.from_dict(data, source="overrides")


def _build_section(section_cls: type, values: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(section_cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(known)}")
    checked = {
        key: _check_type(str(known[key].type), value, f"{where}.{key}") for key, value in values.items()
    }
    try:
        return section_cls(**checked)
    except ConfigError as error:
        raise ConfigError(f"{where.split(':')[0]}: {error}") from None


def _check_type(annotation: str, value: Any, key: str) -> Any:
    """The value, checked against its field's annotation (a string under postponed evaluation)."""
    if value is None and "None" in annotation:
        return None
    base = annotation.replace(" | None", "")
    if base == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
    elif base in ("int", "float"):
        if isinstance(value, str) and base == "float":  # PyYAML reads `1e-4` (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if base == "int" and not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be finite, got {value!r}")
    elif base == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
    elif base == "list[str]" and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
        raise ConfigError(f"{key} must be a list of strings, got {value!r}")
    elif base == "dict[str, Any]" and (
        not isinstance(value, dict) or not all(isinstance(k, str) for k in value)
    ):
        raise ConfigError(f"{key} must be a mapping of names to values, got {value!r}")
    return value


def field_help(section_cls: type) -> dict[str, str]:
    """name -> help text of a settings dataclass (for CLI help and docs)."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(section_cls)}
