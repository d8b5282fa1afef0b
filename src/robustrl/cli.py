"""The ``robustrl`` command: train, evaluate, attack, report, sweep, theory, quickstart.

Errors a user can cause (bad flags, unknown env, corrupt checkpoint, ...) print one line
``robustrl: error: ...`` and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from robustrl.errors import RobustRLError

QUICKSTART = {
    # Pendulum-v1: SAC solves it (return above about -200) in about 10k steps; on 2 CPU cores
    # SAC trains in about a minute, VALT-EPS-SAC in a few.
    "env": "Pendulum-v1",
    "eps": 0.2,  # observation budget (normalised units) for VALT-EPS training and the attacks
    "steps": 12_000,
    "learning_starts": 1_000,
    "eval_every": 3_000,
    "eval_episodes": 5,
    "checkpoint_every": 3_000,
    "log_every": 500,
}
QUICKSTART_ATTACKS = ["random", "mad", "pgd-minq"]  # fast: they need no training


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
    """Train SAC and VALT-EPS-SAC on the same small task, attack both, print and plot the table."""
    from robustrl import checkpoint, runlock, training
    from robustrl.config import build_config
    from robustrl.envs import make_env
    from robustrl.report import build_report
    from robustrl.robustness import evaluate_robustness, format_table
    from robustrl.threat import ObservationBall
    from robustrl.views import load_view

    settings = dict(QUICKSTART, steps=args.steps if args.steps is not None else QUICKSTART["steps"])
    env, eps = settings.pop("env"), settings.pop("eps")
    out = Path(args.out)
    records = []
    for algo in ("sac", "valt-eps-sac"):
        overrides = {"adversary.eps": eps} if algo != "sac" else {}
        config = build_config(
            algo, env, seed=args.seed, compile=args.compile, overrides=overrides, **settings
        )
        print(
            f"robustrl quickstart: training {algo} on {env} for {config.steps} steps (seed {config.seed})"
        )
        run_dir = training.train(config, out=out, save_buffer=False, progress=not args.quiet)
        print(
            f"robustrl quickstart: attacking {run_dir.name} at eps {eps} ({', '.join(QUICKSTART_ATTACKS)})"
        )
        with runlock.locked(run_dir, "attacking"):
            record = evaluate_robustness(
                load_view(run_dir),
                lambda: make_env(env),
                QUICKSTART_ATTACKS,
                ObservationBall(eps),
                episodes=args.episodes,
                seed=args.seed,
                progress=not args.quiet,
                log=lambda line: None,
            )
            (run_dir / "eval").mkdir(exist_ok=True)
            checkpoint.write_json(run_dir / "eval" / "attacks.json", record)
        records.append((algo, run_dir, record))
    report_dir = out / f"quickstart_report_s{args.seed}"
    md, png = build_report(
        [run_dir for _, run_dir, _ in records],
        report_dir,
        title=f"SAC vs VALT-EPS-SAC on {env}, eps {eps}",
    )
    for algo, run_dir, record in records:
        print(f"\n{algo} ({run_dir}):")
        print(format_table(record))
    print(f"\nreport: {md} and {png}")
    print(f"next: robustrl attack {records[-1][1]} --attacks all --budget 5000 --eps {eps}")


def _parse_attack_settings(items: list[str]) -> dict[str, dict]:
    """``["mad.steps=20", "rs.reg=[0.1,1]"]`` -> ``{"mad": {"steps": 20}, "rs": {"reg": [0.1, 1]}}``."""
    from robustrl.config import parse_set_args

    settings: dict[str, dict] = {}
    for key, value in parse_set_args(items).items():
        name, dot, field = key.rpartition(".")
        if not dot or not name:
            raise RobustRLError(
                f"--attack-set expects ATTACK.KEY=VALUE (e.g. mad.steps=20), got {key!r}"
            )
        settings.setdefault(name, {})[field] = value
    return settings


def _load_victim(args: argparse.Namespace):
    """(view, default results path, cache folder) for a run directory or an SB3 zip."""
    target = Path(args.target)
    if args.sb3:
        if not args.algo or not args.env:
            raise RobustRLError(
                "--sb3 needs --algo (sac, td3 or ppo) and --env (the model's gymnasium id)"
            )
        try:
            from robustrl.sb3 import load_sb3_view
        except ImportError as exc:
            raise RobustRLError(
                f"attacking SB3 models needs stable-baselines3: pip install 'robustrl[sb3]' ({exc})"
            ) from None
        view = load_sb3_view(target, args.algo, args.env, args.vecnormalize)
        return (
            view,
            target.with_suffix(".attacks.json"),
            target.parent / f"{target.stem}_attack_cache",
        )
    if args.algo or args.env or args.vecnormalize:
        raise RobustRLError(
            "--algo, --env and --vecnormalize describe --sb3 models; a run directory knows its own"
        )
    from robustrl.views import load_view

    return load_view(target), target / "eval" / "attacks.json", target / "attack_cache"


def _attack(args: argparse.Namespace) -> None:
    from robustrl import checkpoint, runlock
    from robustrl.attacks import ATTACKS, resolve_names
    from robustrl.config import OAConfig
    from robustrl.envs import make_env
    from robustrl.robustness import eps_sweep, evaluate_robustness, format_table
    from robustrl.threat import ActionBall, ObservationBall, check_eps, paper_eps

    if args.episodes <= 0:
        raise RobustRLError(f"--episodes must be > 0, got {args.episodes}")
    if args.budget is not None and args.budget <= 0:
        raise RobustRLError(f"--budget must be > 0 environment steps, got {args.budget}")
    if args.n_envs <= 0:
        raise RobustRLError(f"--n-envs must be > 0, got {args.n_envs}")
    sweep: list[float] = []
    if args.eps_sweep:
        try:
            sweep = [
                check_eps(float(v), "--eps-sweep value")
                for v in args.eps_sweep.split(",")
                if v.strip()
            ]
        except ValueError:
            raise RobustRLError(
                f"--eps-sweep expects numbers separated by commas, got {args.eps_sweep!r}"
            ) from None
    view, default_json, cache_dir = _load_victim(args)
    out = Path(args.json) if args.json else default_json
    if out.is_dir():  # say so now, not after every attack has run
        raise RobustRLError(f"--json {out} is a directory; give the path of a file to write")
    eps = args.eps if args.eps is not None else paper_eps(view.env_id)
    if eps is None:
        raise RobustRLError(
            f"no paper eps for {view.env_id}; give --eps (normalised units, e.g. 0.1)"
        )
    check_eps(eps, "--eps")
    names = resolve_names(args.attacks, view)
    action_names = [n for n in names if n.startswith("a-")]
    if args.action_eps is not None and not action_names:
        raise RobustRLError(
            "--action-eps is for action attacks (a-random, a-biggest, a-minq, a-minoaq); none was asked for"
        )
    action_eps = check_eps(
        args.action_eps if args.action_eps is not None else OAConfig.action_eps, "--action-eps"
    )
    if action_eps > 2.0:  # the whole action range is 2 wide in normalised units
        raise RobustRLError(
            f"--action-eps must be in [0, 2] (normalised actions), got {action_eps}"
        )
    action_ball = ActionBall(action_eps) if action_names else None
    learned = [n for n in names if n in ATTACKS and ATTACKS[n].learned]
    if learned and args.budget is None:
        raise RobustRLError(
            f"{', '.join(learned)} {'is a learned attack' if len(learned) == 1 else 'are learned attacks'}: "
            f"give --budget STEPS (environment steps to train each attacker), or leave them out of --attacks"
        )
    settings = _parse_attack_settings(args.attack_set)
    unknown = sorted(set(settings) - set(names))
    if unknown:
        raise RobustRLError(
            f"--attack-set names {', '.join(unknown)}, which --attacks does not run"
        )
    env_kwargs = getattr(view, "env_kwargs", {})
    unit = "raw" if args.raw_eps else "normalised"

    def run(value: float) -> dict:
        ball = (
            ObservationBall.from_raw(value, view.obs_std)
            if args.raw_eps
            else ObservationBall(value)
        )
        extra = f", action eps {action_eps}" if action_names else ""
        print(
            f"{view.env_id} ({view.kind}): eps {value} ({unit} units){extra}, {args.episodes} episodes per attack"
        )
        record = evaluate_robustness(
            view,
            lambda: make_env(view.env_id, **env_kwargs),
            names,
            ball,
            episodes=args.episodes,
            seed=args.seed,
            settings=settings,
            budget=args.budget,
            cache_dir=cache_dir,
            deterministic=not args.stochastic,
            n_envs=args.n_envs,
            progress=not args.quiet,
            action_ball=action_ball,
        )
        record.update(eps=value, eps_units=unit)
        return record

    # a run directory gets results and attack caches: one writer at a time
    with contextlib.nullcontext() if args.sb3 else runlock.locked(args.target, "attacking"):
        record = run(eps)
        print()
        print(format_table(record))
        out.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_json(out, record)
        print(f"wrote {out}")
        if sweep:
            stem = out.with_suffix("")
            eps_sweep(run, sweep, Path(f"{stem}_eps_sweep.csv"), Path(f"{stem}_eps_sweep.png"))
            print(f"wrote {stem}_eps_sweep.csv and {stem}_eps_sweep.png")


def _report(args: argparse.Namespace) -> None:
    from robustrl.sweep import is_sweep_dir

    sweeps = [p for p in args.inputs if is_sweep_dir(p)]
    if sweeps:
        _sweep_report(args, sweeps)
        return
    from robustrl.report import build_report

    md, png = build_report([Path(p) for p in args.inputs], Path(args.out or "report"))
    print(md.read_text())
    print(f"wrote {md} and {png}")


def _sweep_report(args: argparse.Namespace, sweeps: list[str]) -> None:
    """``robustrl report SWEEP_DIR``: the median-seed report of a sweep directory."""
    from robustrl.sweep import build_sweep_report

    if len(args.inputs) > 1:
        raise RobustRLError(
            f"report takes one sweep directory ({sweeps[0]} is one), or run directories / attacks.json files"
        )
    written = build_sweep_report(sweeps[0], args.out)
    print(written["md"].read_text())
    print(f"wrote {', '.join(str(p) for p in written.values())}")


def _sweep(args: argparse.Namespace) -> None:
    """``robustrl sweep SWEEP.yaml``: run (or continue) a sweep; failed cells make it exit 2."""
    from robustrl.sweep import load_spec, make_executor, run_sweep

    spec = load_spec(args.spec)
    out = Path(args.out) if args.out else Path("runs") / "sweeps" / Path(args.spec).stem
    executor = make_executor(args.backend, workers=args.workers, address=args.address)
    summary = run_sweep(spec, out, executor, progress=not args.quiet)
    problems = []
    if summary.failed:
        first = "; ".join(f"{s.id}: {s.error}" for s in summary.failed[:2])
        more = f"; +{len(summary.failed) - 2} more" if len(summary.failed) > 2 else ""
        problems.append(f"{len(summary.failed)} cells failed ({first}{more})")
    if summary.interrupted:
        problems.append(f"{len(summary.interrupted)} interrupted")
    if summary.blocked:
        problems.append(f"{len(summary.blocked)} attack cells wait for their train cell")
    if problems:
        raise RobustRLError(
            f"sweep incomplete: {', '.join(problems)}; states in {out}/cells/; "
            "run the same command to retry"
        )
    print(f"sweep directory: {out}\nnext: robustrl report {out}")


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

    at = sub.add_parser(
        "attack",
        help="evaluate an agent under observation and action attacks",
        description="Clean evaluation plus each attack on the same episode seeds; prints a table and writes attacks.json.",
    )
    at.add_argument("target", help="a robustrl run directory, or an SB3 .zip with --sb3")
    at.add_argument(
        "--attacks",
        default="all",
        help="comma-separated attack names, or 'all' (default): those the agent supports",
    )
    at.add_argument(
        "--eps",
        type=float,
        help="L-inf budget in normalised observation units (default: the paper's for the env)",
    )
    at.add_argument(
        "--action-eps",
        type=float,
        help="L-inf budget of action attacks (a-*) in normalised action units [-1, 1] (default 0.1)",
    )
    at.add_argument(
        "--raw-eps",
        action="store_true",
        help="--eps is in raw observation units (converted with the agent's normaliser std)",
    )
    at.add_argument("--episodes", type=int, default=20, help="episodes per attack (default 20)")
    at.add_argument(
        "--seed", type=int, default=0, help="seed of episodes and attack randomness (default 0)"
    )
    at.add_argument(
        "--budget",
        type=int,
        help="environment steps to train each learned attack (sa-rl, pa-ad); caps Robust Sarsa's data",
    )
    at.add_argument(
        "--attack-set",
        action="append",
        default=[],
        metavar="ATTACK.KEY=VALUE",
        help="an attack's setting, e.g. mad.steps=20 (repeatable)",
    )
    at.add_argument(
        "--eps-sweep",
        metavar="E1,E2,...",
        help="also evaluate at these eps and write a return-vs-eps CSV and PNG",
    )
    at.add_argument(
        "--json",
        help="results file (default: RUN_DIR/eval/attacks.json, or MODEL.attacks.json beside an SB3 zip)",
    )
    at.add_argument(
        "--stochastic",
        action="store_true",
        help="the victim samples its actions (default: deterministic mean action)",
    )
    at.add_argument(
        "--n-envs",
        type=int,
        default=8,
        help="episodes run in parallel, batched through the attack (default 8)",
    )
    at.add_argument("--sb3", action="store_true", help="TARGET is a Stable-Baselines3 model zip")
    at.add_argument("--algo", help="with --sb3: sac, td3 or ppo")
    at.add_argument("--env", help="with --sb3: the gymnasium id the model was trained on")
    at.add_argument("--vecnormalize", help="with --sb3: VecNormalize statistics file saved by SB3")
    at.add_argument("--quiet", action="store_true", help="no progress bars")
    at.set_defaults(func=_attack)

    rp = sub.add_parser(
        "report",
        help="robustness table across runs (Markdown + PNG), or a sweep's report",
        description="Runs / attacks.json files: a Table-1-style Markdown + PNG. A sweep directory: "
        "median-seed and across-seed tables, the paper's numbers, plots (Markdown, CSV, HTML).",
    )
    rp.add_argument(
        "inputs",
        nargs="+",
        help="run directories (with eval/attacks.json) or attacks.json files, or one sweep directory",
    )
    rp.add_argument(
        "--out", help="output folder (default: report/, or SWEEP_DIR/report for a sweep)"
    )
    rp.set_defaults(func=_report)

    sw = sub.add_parser(
        "sweep",
        help="run a YAML grid of train and attack cells, resumably, locally or on Ray",
        description="Run (or continue) a sweep: train cells, then attack cells of each finished "
        "run. Re-running skips done cells, retries failed ones and resumes interrupted training. "
        "Format: sweeps/README.md.",
    )
    sw.add_argument("spec", help="sweep YAML file, e.g. sweeps/smoke.yaml")
    sw.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local worker processes (default) or tasks on a Ray cluster",
    )
    sw.add_argument(
        "--workers", type=int, help="local: cells run at once, one process each (default 1)"
    )
    sw.add_argument(
        "--address",
        help="ray: cluster address (default auto: the cluster `ray start` joined; local: a "
        "throwaway instance on this machine)",
    )
    sw.add_argument("--out", help="sweep directory (default: runs/sweeps/<spec file stem>)")
    sw.add_argument("--quiet", action="store_true", help="no progress lines")
    sw.set_defaults(func=_sweep)

    from robustrl.theory.cli import add_parser as add_theory_parser

    add_theory_parser(sub)

    qs = sub.add_parser(
        "quickstart",
        help="train SAC and VALT-EPS-SAC on a small task, attack both, write a robustness report",
    )
    qs.add_argument(
        "--out", default="runs", help="parent folder of the run directory (default: runs/)"
    )
    qs.add_argument("--steps", type=int, help=f"training steps (default {QUICKSTART['steps']})")
    qs.add_argument("--seed", type=int, default=0)
    qs.add_argument("--episodes", type=int, default=10, help="evaluation episodes per attack")
    qs.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the update step (default: auto)",
    )
    qs.add_argument("--quiet", action="store_true")
    qs.set_defaults(func=_quickstart)
    return parser


def _check_common(args: argparse.Namespace) -> None:
    """Arguments several commands share, checked before any command starts."""
    seed = getattr(args, "seed", None)
    if seed is not None and not 0 <= seed <= 2**32 - 1:
        raise RobustRLError(f"--seed must be in [0, 4294967295], got {seed}")
    for name in ("episodes", "steps", "workers"):
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            raise RobustRLError(f"--{name} must be > 0, got {value}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_common(args)
        args.func(args)
    except RobustRLError as exc:
        if args.debug:
            raise
        print(f"robustrl: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path that cannot be written: under a file, too long, no space
        if args.debug:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        print(f"robustrl: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the trainer has already saved and said how to resume
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
