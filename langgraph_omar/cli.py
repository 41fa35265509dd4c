"""`omar`: envs, rollout, train, eval, export, demo. All argument parsing lives here.

Flags come from the dataclasses that own the values (one source of truth for names, types and help): an
environment's options (`omar rollout negotiation --kind split`), the training config (`--selfplay.iterations`,
or `--iterations` where the name is unique) and the evaluation config. Bad input ends with one line on stderr
(OMAR_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
import types
import typing
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from langgraph_omar.errors import OmarError, first_line
from langgraph_omar.run_folder import RunFolder

ENV_COMMANDS = ("rollout", "train", "eval")
ENV_OPTION = "env_option."  # argparse dest prefix of an environment's options
CONFIG_KEY = "config_key."  # argparse dest prefix of a training config key
# Short flags that are not the field's own name.
SHORT_FLAGS = {"advantage.mode": "--advantage", "update.algo": "--algo", "selfplay.seed": "--seed"}
NO_SHORT_FLAG_SECTIONS = ("env", "degenerate")  # `--empty` would not say what it switches


# ---- flags from dataclasses ---------------------------------------------------------------------------------


def _flag_type(annotation: Any) -> tuple[type | None, bool]:
    """(scalar type, is a list) of a field annotation; (None, False) for types no flag can carry."""
    if isinstance(annotation, types.UnionType):  # X | None
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else None
    if typing.get_origin(annotation) is list and typing.get_args(annotation) == (str,):
        return str, True
    return (annotation, False) if annotation in (str, int, float, bool) else (None, False)


def add_field_flags(
    parser: Any,
    cls: type,
    dest_prefix: str,
    flags_of: Callable[[str], Sequence[str]],
    skip: Sequence[str] = (),
) -> None:
    """One flag per field of dataclass `cls`, spelt `flags_of(field name)`, with the help text of its
    metadata; the value lands in `dest_prefix + name` and stays None unless given."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        scalar, is_list = _flag_type(hints[f.name])
        if f.name in skip or not f.init or scalar is None:
            continue
        default = f.default if f.default is not dataclasses.MISSING else "see the config"
        kwargs: dict[str, Any] = {
            "dest": dest_prefix + f.name,
            "default": None,
            "help": f"{f.metadata.get('help', '')} (default: {default})",
        }
        if scalar is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(type=scalar, metavar=f.name.upper(), nargs="+" if is_list else None)
        # a spelling another flag already has (an environment option named like a command flag) is left to it;
        # argparse keeps the taken spellings in `_option_string_actions` and has no public way to ask
        flags = [flag for flag in flags_of(f.name) if flag not in parser._option_string_actions]
        if not flags:
            raise OmarError(
                f"{cls.__name__}.{f.name}: every spelling of its flag is taken ({flags_of(f.name)})"
            )
        parser.add_argument(*flags, **kwargs)


def kebab(name: str) -> str:
    return name.replace("_", "-")


def _given(args: argparse.Namespace, prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in vars(args).items() if k.startswith(prefix) and v is not None}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Every training config key as `--section.key`, and as `--key` where that name is unique."""
    from langgraph_omar.rl.config import SECTIONS

    counts = Counter(f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls))
    for section, cls in SECTIONS.items():
        if section == "env":
            continue  # ENV and the environment's own flags

        def flags_of(name: str, section: str = section) -> list[str]:
            short = SHORT_FLAGS.get(f"{section}.{name}")
            if short is None and counts[name] == 1 and section not in NO_SHORT_FLAG_SECTIONS:
                short = f"--{kebab(name)}"
            return [f"--{section}.{kebab(name)}", *([short] if short else [])]

        group = parser.add_argument_group(f"config section {section} (overrides --config)")
        add_field_flags(group, cls, f"{CONFIG_KEY}{section}.", flags_of)


def add_env_option_flags(parser: argparse.ArgumentParser, env_spec: str | None) -> None:
    """The options of the environment named on the command line, as flags."""
    if env_spec is None:
        return
    from langgraph_omar.envs.registry import environment_class

    cls = environment_class(env_spec)
    if cls is not None and cls.option_fields():
        group = parser.add_argument_group(f"options of {env_spec}")
        add_field_flags(group, cls, ENV_OPTION, lambda name: [f"--{kebab(name)}", f"--env.{kebab(name)}"])


# ---- commands -----------------------------------------------------------------------------------------------


def _load_environment(args: argparse.Namespace, options: dict[str, Any] | None = None) -> Any:
    from langgraph_omar.envs.registry import load_environment

    return load_environment(args.env, {**(options or {}), **_given(args, ENV_OPTION)})


def _envs(args: argparse.Namespace) -> None:
    from langgraph_omar.envs.registry import environment_class, registered

    if args.name is None:
        for name, target in registered().items():
            cls = environment_class(name)
            print(f"{name:<14} {cls.description if cls else ''}  ({target})")
        print("or module:attribute: a graph of one's own (docs/environments.md)")
        return
    env = _load_environment(argparse.Namespace(env=args.name))
    print(f"{args.name}: {env.description}")
    for f in env.option_fields():
        print(
            f"  --{f.name.replace('_', '-'):<18} {f.metadata.get('help', '')} (now: {getattr(env, f.name)!r})"
        )
    roles = env.roles
    print(f"roles: {', '.join(roles) if roles else 'learnt from the first episode'}")
    if roles:
        print(f"evaluation seats: {', '.join(env.seats(roles))}")
    for name, metric in {**env.seat_metrics, **env.game_metrics}.items():
        print(f"  metric {name} ({metric.kind}): {metric.help}")


def _rollout(args: argparse.Namespace) -> None:
    from langgraph_omar.chat_model import ChatPolicy, served_judge
    from langgraph_omar.rollout import check_output, parse_input, run_episodes, stable_episode_id
    from langgraph_omar.serving.models import refuse_custom_code
    from langgraph_omar.serving.settings import ServingSettings
    from langgraph_omar.trajectory.metadata import episode_metadata

    # every check before the first episode: a bad value must not cost a whole run
    sampling = ServingSettings(**_given(args, CONFIG_KEY))
    if args.episodes < 1 or args.max_concurrency < 1:
        raise OmarError("--episodes and --max-concurrency must be >= 1")
    check_output(args.out)
    # a model folder needing its own code: refused now, not in every episode
    refuse_custom_code(sampling.model)
    env = _load_environment(args)
    fixed = parse_input(args.input)
    model = ChatPolicy(adapter=args.adapter, **dataclasses.asdict(sampling))
    judge = served_judge(sampling.model, sampling.device)
    graph = env.build_graph(model, judge=judge)
    seeds = [args.seed + i for i in range(args.episodes)]
    inputs = [fixed if fixed is not None else env.sample_input(seed) for seed in seeds]
    settings = {
        "options": env.options(),
        "input": fixed,
        "adapter": args.adapter,
        **{k: getattr(sampling, k) for k in ("model", "temperature", "max_tokens")},
        **({"top_p": sampling.top_p} if sampling.top_p != 1.0 else {}),  # ids of earlier files stay stable
    }
    metadata = [
        episode_metadata(s, env=env.name, episode_id=stable_episode_id(env.name, s, settings)) for s in seeds
    ]
    episodes, summary = run_episodes(
        graph,
        inputs,
        metadata,
        max_concurrency=args.max_concurrency,
        recursion_limit=env.recursion_limit,
        out=args.out,
        configurable=[env.sample_config(s) for s in seeds],
    )
    for episode in episodes:
        if episode.status != "ok":
            print(f"failed episode {episode.episode_id}: {episode.error}", file=sys.stderr)
    print(summary.line())
    print(summary.reward_line())
    if note := summary.tool_note():
        print(note, file=sys.stderr)
    written = summary.written or 0
    print(f"wrote {written} episodes to {args.out} ({summary.episodes - written} already there)")
    failed = [e for e in episodes if e.status != "ok"]
    if len(failed) == len(episodes):
        raise OmarError(f"every episode failed; the first: {failed[0].error}")
    if failed:
        print(f"{len(failed)} of {len(episodes)} episodes failed (see above)", file=sys.stderr)


def train_config(args: argparse.Namespace) -> Any:
    """The run's `RunConfig`: defaults, then the --config YAML, then the flags (ENV and its options too)."""
    from langgraph_omar.rl.config import RunConfig

    base = RunConfig.from_yaml(args.config) if args.config else RunConfig()
    options = base.env.options if base.env.name == args.env else {}
    overrides: dict[str, Any] = {"env.name": args.env, "env.options": {**options, **_given(args, ENV_OPTION)}}
    return base.with_overrides({**overrides, **_given(args, CONFIG_KEY)})


def _train(args: argparse.Namespace) -> None:
    from langgraph_omar.rl.selfplay import run_selfplay

    if args.from_files:
        return _train_from_files(args)
    if args.env is None or args.roles or args.reward:
        raise OmarError(
            "give ENV (self-play) or --from FILE (train from recorded episodes; --roles, --reward)"
        )
    config = train_config(args)
    env = _load_environment(args, config.env.options)
    if not getattr(env, "takes_model", True):
        raise OmarError(
            f"{args.env}: omar train needs a factory taking model= (a compiled graph keeps its own models, "
            "which cannot train)"
        )
    history = run_selfplay(config, args.out, env, progress=not args.no_progress)
    from accelerate import PartialState

    if not PartialState().is_main_process:  # under torchrun the main process reports for all
        return
    if not history:
        print(f"nothing to do: {args.out} already holds {config.selfplay.iterations} iteration(s)")
    elif all(r.get("untrained") for r in history):
        raise OmarError(
            f"no iteration trained a turn (see the warnings above); {RunFolder(args.out).adapter} is untrained"
        )
    else:
        last = history[-1]
        print(
            f"trained {len(history)} iteration(s); last: reward_mean {last.get('reward_mean', math.nan):.3f}, "
            f"degenerate {last['degenerate_fraction']:.2f}, "
            f"logprob_mismatch {last.get('logprob_mismatch', float('nan')):.4f}"
        )
    print(f"adapter: {RunFolder(args.out).adapter}")


def _train_from_files(args: argparse.Namespace) -> None:
    from langgraph_omar.rl.from_files import run_summary, train_from_files

    if args.env is not None:
        raise OmarError(f"ENV {args.env} and --from exclude each other: --from trains on the files' episodes")
    config = train_config(args)
    history = train_from_files(
        config, args.out, args.from_files, roles=args.roles, reward=args.reward, progress=not args.no_progress
    )
    if history and all(r.get("untrained") for r in history):
        raise OmarError(
            f"no iteration trained a turn (see the warnings above); {RunFolder(args.out).adapter} is untrained"
        )
    print(
        run_summary(history, config)
        if history
        else f"nothing to do: {args.out} already trained on these files"
    )
    print(f"adapter: {RunFolder(args.out).adapter}")


def _eval(args: argparse.Namespace) -> None:
    from langgraph_omar.eval.arena import EvalConfig, run_arena
    from langgraph_omar.eval.report import write_report

    env = _load_environment(args)
    run_dir = Path(args.run_dir) if args.run_dir is not None else None
    if run_dir is not None and not RunFolder(run_dir).metrics_file.is_file():
        raise OmarError(f"--run {run_dir}: no {RunFolder(run_dir).metrics_file.name} in that folder")
    config = EvalConfig(
        env=args.env,
        adapter=args.adapter,
        opponent=args.vs,
        env_options=env.options(),
        **_given(args, CONFIG_KEY),
    )
    result = run_arena(config, env=env)
    paths = write_report(result, Path(args.out), run_dir=run_dir)
    print(result.headline())
    for name, path in paths.items():
        print(f"{name}: {path}")
    if result.failed_games == len(result.games):
        raise OmarError(f"every game failed; the first: {result.games[0].error}")


def _export(args: argparse.Namespace) -> None:
    from langgraph_omar.export import export_merged

    if not args.merge:
        raise OmarError(
            "export writes a merged model: pass --merge (to share the adapter alone, copy its folder)"
        )
    out = export_merged(args.adapter, args.out, args.model, dtype=args.dtype, overwrite=args.overwrite)
    print(
        f"merged model: {out} (load with AutoModelForCausalLM.from_pretrained or ChatPolicy(model='{out}'))"
    )


def _demo(args: argparse.Namespace) -> None:
    from langgraph_omar.demo import run_demo

    out = Path(args.out) if args.out else Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    run_demo(
        out,
        episodes=args.episodes,
        seed=args.seed,
        iterations=args.iterations,
        eval_seeds=args.eval_seeds,
        behaviour_rewards=args.behaviour_rewards,
        advantage=args.advantage,
    )


# ---- the parser ---------------------------------------------------------------------------------------------

ENV_HELP = (
    "a registered environment (omar envs) or module:attribute naming your graph, factory or Environment"
)


def build_parser(env_spec: str | None = None) -> argparse.ArgumentParser:
    """The `omar` parser; `env_spec` (the ENV of rollout/train/eval) adds that environment's option flags."""
    from langgraph_omar.eval.arena import EvalConfig
    from langgraph_omar.rl.config import ADVANTAGE_MODES
    from langgraph_omar.serving.settings import ServingSettings

    parser = argparse.ArgumentParser(
        prog="omar", description="One Model, All Roles: self-play RL for LangGraph"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    envs = commands.add_parser("envs", help="list the registered environments, or one's options and seats")
    envs.add_argument("name", nargs="?", default=None)
    envs.set_defaults(run=_envs)

    rollout = commands.add_parser("rollout", help="run episodes of a graph and export their trajectories")
    rollout.add_argument("env", help=ENV_HELP)
    rollout.add_argument("--episodes", type=int, default=8)
    rollout.add_argument("--out", required=True, help="trajectory file (.jsonl or .parquet); appended to")
    rollout.add_argument("--seed", type=int, default=0, help="scenario seed of the first episode")
    rollout.add_argument("--input", default=None, help="JSON input state for every episode (user graphs)")
    rollout.add_argument("--max-concurrency", type=int, default=64)
    rollout.add_argument(
        "--adapter", default=None, help="LoRA adapter directory for every role (default: base)"
    )
    add_field_flags(rollout, ServingSettings, CONFIG_KEY, lambda name: [f"--{kebab(name)}"])
    add_env_option_flags(rollout, env_spec)
    rollout.set_defaults(run=_rollout)

    train = commands.add_parser(
        "train", help="self-play RL on an environment, or training from recorded episodes (--from)"
    )
    train.add_argument("env", nargs="?", default=None, help=f"{ENV_HELP} (omit with --from)")
    train.add_argument(
        "--from",
        dest="from_files",
        action="append",
        default=None,
        metavar="FILE",
        help="train on the episodes of this trajectory file (.jsonl/.parquet; repeat for more) instead of "
        "self-play; --algo sft | filtered-bc | ppo",
    )
    train.add_argument(
        "--roles", nargs="+", default=None, help="with --from: the roles that learn (default: all)"
    )
    train.add_argument(
        "--reward",
        default=None,
        metavar="MODULE:FUNCTION",
        help="with --from: reward every episode with this function of an Episode returning {role: float} "
        "(or path/to/file.py:function)",
    )
    train.add_argument("--out", required=True, help="run folder (config, metrics, trajectories, adapters)")
    train.add_argument("--config", default=None, help="YAML config (see training/negotiation.yaml)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_env_option_flags(train, env_spec)
    add_config_flags(train)
    train.set_defaults(run=_train)

    evaluate = commands.add_parser(
        "eval",
        help="arena evaluation of an adapter against the base model (or another adapter), with a report",
    )
    evaluate.add_argument("env", help=ENV_HELP)
    evaluate.add_argument(
        "--adapter", required=True, help="the tested LoRA adapter (directory or loaded name)"
    )
    evaluate.add_argument("--vs", default=None, help="the opponent's adapter (default: the base model)")
    evaluate.add_argument("--out", required=True, help="folder for eval.json, the plots and report.html")
    evaluate.add_argument(
        "--run", dest="run_dir", default=None, help="a training run folder: plot its metrics.jsonl"
    )
    add_field_flags(
        evaluate,
        EvalConfig,
        CONFIG_KEY,
        lambda name: [f"--{kebab(name)}"],
        skip=("env", "adapter", "opponent", "env_options"),
    )
    add_env_option_flags(evaluate, env_spec)
    evaluate.set_defaults(run=_eval)

    export = commands.add_parser(
        "export", help="merge a LoRA adapter into its base: a standalone transformers model directory"
    )
    export.add_argument(
        "adapter", help="LoRA adapter directory (adapter_config.json + adapter_model.safetensors)"
    )
    export.add_argument(
        "--merge", action="store_true", help="merge the adapter into the base weights (the only export kind)"
    )
    export.add_argument("--out", required=True, help="directory for the standalone model")
    export.add_argument(
        "--model", default=None, help="base model (default: base_model_name_or_path of the adapter config)"
    )
    export.add_argument(
        "--dtype",
        default="float32",
        choices=("bfloat16", "float16", "float32"),
        help="dtype of the saved weights",
    )
    export.add_argument("--overwrite", action="store_true", help="replace an existing --out directory")
    export.set_defaults(run=_export)

    demo = commands.add_parser("demo", help="the main job on the default model (see README)")
    demo.add_argument("--out", default=None, help="folder for every artefact (default: runs/demo-TIME)")
    demo.add_argument("--episodes", type=int, default=8, help="episodes of step 1 (the base model, traced)")
    demo.add_argument(
        "--seed",
        type=int,
        default=0,
        help="the demo seed: the training scenarios, the update's seed and the evaluation's fresh scenario "
        "seeds follow from it",
    )
    demo.add_argument(
        "--iterations", type=int, default=None, help="training iterations (default: the demo recipe's 7)"
    )
    demo.add_argument(
        "--eval-seeds",
        type=int,
        default=None,
        help="fresh scenario seeds of the evaluation, each played once per seat (default: 40)",
    )
    demo.add_argument(
        "--advantage",
        choices=ADVANTAGE_MODES,
        default=None,
        help="advantage estimator of the PPO iterations (default: the demo recipe's hierarchical)",
    )
    demo.add_argument(
        "--behaviour-rewards",
        type=float,
        default=0.0,
        help="size b of MARO's behaviour-level rewards in the demo's negotiation (0: the outcome alone)",
    )
    demo.set_defaults(run=_demo)
    return parser


def _env_spec(argv: Sequence[str]) -> str | None:
    """The ENV argument of rollout/train/eval (the first word after the command that is not a flag)."""
    if len(argv) >= 2 and argv[0] in ENV_COMMANDS and not argv[1].startswith("-"):
        return argv[1]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else "omar"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an environment's import warnings are said again when it loads
            parser = build_parser(_env_spec(argv))
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # argparse has printed the usage and the error (or the help)
            return exc.code if isinstance(exc.code, int) else 2
        run: Callable[[argparse.Namespace], None] = args.run
        run(args)
    except (OmarError, ValueError, FileNotFoundError) as exc:
        if os.environ.get("OMAR_DEBUG"):
            raise
        print(f"omar {command}: error: {first_line(exc)}", file=sys.stderr)
        if detail := getattr(exc, "detail", None):  # the user's own exception (UserCodeError), in full
            print(detail, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
