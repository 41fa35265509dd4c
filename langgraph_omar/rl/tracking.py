"""Watching a training run: accelerate's experiment trackers and the console line of each iteration.

The trackers (`selfplay.log_with`; by default TensorBoard under RUN/logs when it is installed) get the numbers
of every metrics.jsonl line; the console gets one line per iteration (`summary_line`).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from langgraph_omar.errors import OmarError
from langgraph_omar.rl.config import RunConfig

TRACKER_PROJECT = "langgraph-omar"  # W&B project, MLflow experiment, TensorBoard folder under RUN/logs


def experiment_trackers(names: list[str] | None) -> list[str]:
    """The trackers of `selfplay.log_with`: None -> tensorboard when installed, else none. A named tracker
    that accelerate does not know or that is not installed raises OmarError."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    available = {str(t) for t in get_available_trackers()}
    if names is None:
        return ["tensorboard"] if "tensorboard" in available else []
    for name in names:
        if name not in LOGGER_TYPE_TO_CLASS:
            raise OmarError(
                f"selfplay.log_with: unknown tracker {name!r}; one of {sorted(LOGGER_TYPE_TO_CLASS)}"
            )
        if name not in available:
            raise OmarError(f"selfplay.log_with: {name} is not installed (pip install {name})")
    return list(names)


def start_trackers(accelerator: Any, config: RunConfig, run_name: str, start: int) -> None:
    """Start the accelerator's trackers with the run config (flattened to `section.key` scalars, as
    TensorBoard's hparams need); a resumed TensorBoard run drops the events of iterations >= `start`."""
    flat = {
        f"{section}.{key}": value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
        for section, values in config.to_dict().items()
        for key, value in values.items()
    }
    accelerator.init_trackers(
        TRACKER_PROJECT,
        config=flat,
        init_kwargs={
            "tensorboard": {"purge_step": start} if start else {},
            "wandb": {"name": run_name},
            "mlflow": {"run_name": run_name},
        },
    )


def log_to_trackers(accelerator: Any, record: dict[str, Any]) -> None:
    """The numbers of one metrics record, at step `iteration`, to the accelerator's trackers (if any)."""
    if accelerator.trackers:
        numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "iteration"}
        accelerator.log(numbers, step=record["iteration"])


def summary_line(record: dict[str, Any], iterations: int, rates: Collection[str] = ()) -> str:
    """One console line per iteration: the policy's reward per role, the rates the environment declares
    (`rates`: its `rate_metrics()`, e.g. agreement, win; a rate's flattened parts `env_NAME_KEY` too), the
    degenerate share, the KL (to the base with kl_coef, else PPO's old-to-new) and the time (of the rollout,
    for self-play, and of the update)."""
    parts = [f"iteration {record['iteration'] + 1}/{iterations}"]
    rewards = sorted(
        (k[len("reward_") :], v) for k, v in record.items() if k.startswith("reward_") and k != "reward_mean"
    )
    parts.append("reward " + " ".join(f"{role} {value:+.3f}" for role, value in rewards))
    shown = sorted(
        (k[len("env_") :], v)
        for k, v in record.items()
        if k.startswith("env_") and any(k == f"env_{r}" or k.startswith(f"env_{r}_") for r in rates)
    )
    parts.extend(f"{name} {value:.2f}" for name, value in shown)
    parts.append(f"degenerate {record.get('degenerate_fraction', 0.0):.2f}")
    kl = record.get("kl", record.get("approx_kl"))
    if kl is not None:
        parts.append(f"kl {kl:.4f}")
    rollout = f"rollout {record['rollout_seconds']:.0f} s, " if "rollout_seconds" in record else ""
    parts.append(
        f"{rollout}update {record.get('update_seconds', 0.0):.0f} s ({record['num_processes']} process(es))"
    )
    return " | ".join(parts)
