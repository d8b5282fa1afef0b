"""The ``robustrl`` command: train, evaluate, quickstart.

Errors a user can cause (bad flags, unknown env, corrupt checkpoint, ...) print one line
``robustrl: error: ...`` and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from robustrl.errors import RobustRLError

QUICKSTART = {
    # Pendulum-v1: SAC solves it (return above about -200) in about 10k steps; on 2 CPU cores
    # the whole run takes a few minutes.
    "env": "Pendulum-v1",
    "steps": 12_000,
    "learning_starts": 1_000,
    "eval_every": 3_000,
    "eval_episodes": 5,
    "checkpoint_every": 3_000,
    "log_every": 500,
}


def _train(args: argparse.Namespace) -> None:
    from robustrl import training
    from robustrl.config import build_config, parse_set_args

    if args.resume:
        if args.set or args.preset or args.env or args.algo or args.seed is not None or args.name:
            raise RobustRLError(
                "--resume continues a run with its saved config; only --steps and --save-buffer may be given"
            )
        run_dir = training.resume(
            args.resume, steps=args.steps, save_buffer=args.save_buffer, progress=not args.quiet
        )
    else:
        if not args.env:
            raise RobustRLError(
                "train needs --env (a gymnasium id such as HalfCheetah-v5), or --resume RUN_DIR"
            )
        config = build_config(
            algo=args.algo or "sac",
            env=args.env,
            preset=args.preset,
            overrides=parse_set_args(args.set),
            steps=args.steps,
            seed=args.seed,
            compile=args.compile,
        )
        run_dir = training.train(
            config,
            out=args.out,
            name=args.name,
            save_buffer=args.save_buffer,
            progress=not args.quiet,
        )
    print(f"run directory: {run_dir}")


def _evaluate(args: argparse.Namespace) -> None:
    from robustrl.evaluation import evaluate_run

    result = evaluate_run(args.run_dir, args.episodes, args.deterministic, args.seed)
    mode = "deterministic" if args.deterministic else "stochastic"
    print(
        f"{args.run_dir}: return {result.mean:.1f} +- {result.std:.1f} "
        f"(min {result.min:.1f}, max {result.max:.1f}; {args.episodes} episodes, {mode})"
    )
    print(f"wrote {Path(args.run_dir) / 'eval' / 'clean.json'}")


def _quickstart(args: argparse.Namespace) -> None:
    from robustrl import training
    from robustrl.config import build_config
    from robustrl.evaluation import evaluate_run

    settings = dict(QUICKSTART, steps=args.steps or QUICKSTART["steps"])
    env = settings.pop("env")
    config = build_config(algo="sac", env=env, seed=args.seed, compile=args.compile, **settings)
    print(
        f"robustrl quickstart: training SAC on {env} for {config.steps} steps (seed {config.seed})"
    )
    run_dir = training.train(config, out=args.out, save_buffer=False, progress=not args.quiet)
    result = evaluate_run(run_dir, episodes=10, deterministic=True, seed=args.seed)
    print(
        f"\nSAC on {env}: deterministic return {result.mean:.1f} +- {result.std:.1f} over 10 episodes"
    )
    print(
        f"run directory: {run_dir}  (metrics.csv, evaluations.csv, tb/, checkpoints/, eval/clean.json)"
    )
    print(f"next: robustrl evaluate {run_dir} --episodes 20 --deterministic")


def build_parser() -> argparse.ArgumentParser:
    from robustrl import __version__
    from robustrl.config import ALGOS

    parser = argparse.ArgumentParser(
        prog="robustrl", description="Adversarially robust reinforcement learning."
    )
    parser.add_argument("--version", action="version", version=f"robustrl {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser(
        "train",
        help="train an agent (or --resume a run)",
        description="Train an agent; writes a run directory.",
    )
    train.add_argument("--algo", help=f"algorithm: {', '.join(ALGOS)} (default: sac)")
    train.add_argument("--env", help="gymnasium environment id with Box observations and actions")
    train.add_argument(
        "--steps", type=int, help="environment steps (default 1000000, or the preset's)"
    )
    train.add_argument("--seed", type=int, help="seed for env, torch and numpy (default 0)")
    train.add_argument(
        "--preset", help="named settings per env, e.g. 'paper' (Hopper/HalfCheetah/Walker2d/Ant-v5)"
    )
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set sac.batch_size=128 (repeatable)",
    )
    train.add_argument(
        "--out", default="runs", help="parent folder of new run directories (default: runs/)"
    )
    train.add_argument("--name", help="run directory name (default: ENV_ALGO_sSEED_TIMESTAMP)")
    train.add_argument(
        "--resume", metavar="RUN_DIR", help="continue an interrupted run from its newest checkpoint"
    )
    train.add_argument(
        "--save-buffer",
        action="store_true",
        help="also checkpoint the replay buffer (exact resume; large)",
    )
    train.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the update step (default: on for CUDA, off for CPU, where eager measured faster)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    train.set_defaults(func=_train)

    ev = sub.add_parser(
        "evaluate",
        help="evaluate a run's newest checkpoint",
        description="Clean evaluation; writes RUN_DIR/eval/clean.json.",
    )
    ev.add_argument("run_dir", help="a run directory written by `robustrl train`")
    ev.add_argument("--episodes", type=int, default=20, help="episodes (default 20)")
    ev.add_argument(
        "--deterministic", action="store_true", help="act with the mean action instead of sampling"
    )
    ev.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the evaluation env and action noise (default 0)",
    )
    ev.set_defaults(func=_evaluate)

    qs = sub.add_parser(
        "quickstart", help="train and evaluate SAC on a small task in a few minutes"
    )
    qs.add_argument(
        "--out", default="runs", help="parent folder of the run directory (default: runs/)"
    )
    qs.add_argument("--steps", type=int, help=f"training steps (default {QUICKSTART['steps']})")
    qs.add_argument("--seed", type=int, default=0)
    qs.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the update step (default: auto)",
    )
    qs.add_argument("--quiet", action="store_true")
    qs.set_defaults(func=_quickstart)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except RobustRLError as exc:
        if args.debug:
            raise
        print(f"robustrl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the trainer has already saved and said how to resume
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
