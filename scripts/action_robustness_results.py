"""Results: TD3 vs OA-TD3 (with and without gradient surgery) under action attacks (issue 5).

Trains each method on one task for several seeds, then evaluates every agent under the four
action attacks over a sweep of action budgets, and writes under ``docs/results/action_robustness/``
(Pendulum-v1, the default) or ``docs/results/action_robustness_<env>/`` (another ``--env``):

    results.csv        method, seed, action_eps, attack, mean, std (10 episodes each)
    summary.md         per method and eps: natural and worst-attack return, mean +- std over seeds
    sweep.png          worst-attack return vs action eps per method (mean +- std over seeds)

Pendulum-v1 is chosen because one run trains in about a minute here (2x64 networks, 7000 steps,
lr 1e-3: settings under which TD3 and OA-TD3 solve it, see tests/test_td3.py); actions are
torques in [-2, 2], so action_eps 0.5 is a quarter of the range.

Reacher-v5 adds a task with a 2-D action (the PGD over the action perturbation is trivial for
Pendulum's 1-D torque) and trains in under 2 minutes per run with the same networks:

    python scripts/action_robustness_results.py            # ~20 min on 2 CPU cores
    python scripts/action_robustness_results.py --env Reacher-v5 --steps 20000 \
        --learning-starts 2000 --pgd-steps 10 --pgd-ablation 1,3   # ~20 min
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

import robustrl
from robustrl.envs import make_env
from robustrl.robustness import evaluate_robustness
from robustrl.threat import ActionBall, ObservationBall
from robustrl.views import load_view

ROOT = Path(__file__).resolve().parents[1]
METHODS = {
    "td3": ("td3", {}),
    "oa-td3": ("oa-td3", {}),
    "oa-td3 (no surgery)": ("oa-td3", {"oa.surgery": False}),
}
ATTACKS = ["a-random", "a-biggest", "a-minq", "a-minoaq"]


def train_run(runs: Path, method: str, seed: int, args) -> Path:
    algo, extra = METHODS[method]
    name = f"{method.replace(' ', '').replace('(', '_').replace(')', '')}_s{seed}"
    if (runs / name / "checkpoints" / "latest.json").exists():
        return runs / name
    overrides = {
        "td3.hidden_sizes": [64, 64],
        "td3.batch_size": 128,
        "td3.actor_lr": 1e-3,
        "td3.critic_lr": 1e-3,
        "oa.action_eps": args.train_action_eps,
        "oa.pgd_steps": args.pgd_steps,
        **extra,
    }
    config = robustrl.build_config(
        algo=algo,
        env=args.env,
        steps=args.steps,
        seed=seed,
        learning_starts=args.learning_starts,
        eval_every=0,
        checkpoint_every=0,
        overrides=overrides,
    )
    start = time.perf_counter()
    run_dir = robustrl.train(config, out=runs, name=name, progress=False)
    (run_dir / "train_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    return run_dir


def train_minutes(runs: Path, method: str, seeds: int) -> str:
    """Mean wall-clock training minutes over seeds (recorded when the run was trained)."""
    name = method.replace(" ", "").replace("(", "_").replace(")", "")
    times = [runs / f"{name}_s{seed}" / "train_seconds.txt" for seed in range(seeds)]
    if not all(t.exists() for t in times):
        return "n/a"
    return f"{np.mean([float(t.read_text()) for t in times]) / 60:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=7000)
    parser.add_argument(
        "--train-action-eps", type=float, default=0.3, help="OA-TD3's action_eps in training"
    )
    parser.add_argument(
        "--pgd-steps", type=int, default=5, help="OA-TD3's inner PGD steps (default config: 10)"
    )
    parser.add_argument(
        "--pgd-ablation",
        default="",
        help="extra OA-TD3 rows trained with these PGD step counts ('' for none)",
    )
    parser.add_argument("--sweep", default="0,0.1,0.2,0.3,0.5")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--runs", help="run directories (default: runs/action_results[_ENV])")
    parser.add_argument("--out", help="default: docs/results/action_robustness[_ENV]")
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="rewrite summary.md and sweep.png from the folder's results.csv (same other flags)",
    )
    args = parser.parse_args()
    suffix = "" if args.env == "Pendulum-v1" else "_" + args.env.split("-")[0].lower()
    args.runs = args.runs or str(ROOT / "runs" / f"action_results{suffix}")
    args.out = args.out or str(ROOT / "docs" / "results" / f"action_robustness{suffix}")
    runs, out = Path(args.runs), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sweep = [float(e) for e in args.sweep.split(",")]
    for k in [int(k) for k in args.pgd_ablation.split(",") if k]:
        METHODS[f"oa-td3 (K={k})"] = ("oa-td3", {"oa.pgd_steps": k})
    if args.summary_only:
        with (out / "results.csv").open() as f:
            rows = [
                {
                    **r,
                    "seed": int(r["seed"]),
                    **{k: float(r[k]) for k in ("action_eps", "mean", "std")},
                }
                for r in csv.DictReader(f)
            ]
        write_summary(rows, sweep, out, args, runs)
        return
    # a-minoaq fits an OA critic to agents without one (TD3); small settings for time
    settings = {"a-minoaq": {"transitions": 5000, "gradient_steps": 3000, "hidden_sizes": [64, 64]}}
    rows = []
    for seed in range(args.seeds):
        for method in METHODS:
            run_dir = train_run(runs, method, seed, args)
            view = load_view(run_dir)
            for eps in sweep:
                record = evaluate_robustness(
                    view,
                    lambda: make_env(args.env),
                    ATTACKS,
                    ObservationBall(0.0),
                    episodes=args.episodes,
                    seed=100,
                    settings=settings,
                    cache_dir=run_dir / "attack_cache",
                    progress=False,
                    log=lambda _: None,
                    action_ball=ActionBall(eps),
                )
                for attack, r in record["results"].items():
                    rows.append(
                        {
                            "method": method,
                            "seed": seed,
                            "action_eps": eps,
                            "attack": attack,
                            "mean": r["mean"],
                            "std": r["std"],
                        }
                    )
                worst = record["worst"]
                print(
                    f"{method:20s} seed {seed} eps {eps:.2f}: natural {record['results']['none']['mean']:8.1f}, "
                    f"worst {worst['mean']:8.1f} ({worst['attack']})",
                    flush=True,
                )
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_summary(rows, sweep, out, args, runs)


def worst_by(rows, method, eps):
    """Per seed: (natural, worst attack mean) for one method and eps."""
    out = []
    for seed in sorted({r["seed"] for r in rows}):
        cell = [
            r
            for r in rows
            if r["method"] == method and r["action_eps"] == eps and r["seed"] == seed
        ]
        natural = next(r["mean"] for r in cell if r["attack"] == "none")
        out.append((natural, min(r["mean"] for r in cell if r["attack"] != "none")))
    return np.array(out)


def write_summary(rows, sweep, out: Path, args, runs: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        f"# TD3 vs OA-TD3 under action attacks ({args.env})",
        "",
        f"{args.seeds} seeds per method, {args.steps} training steps, 2x64 networks; OA-TD3 trained with "
        f"action_eps {args.train_action_eps} and {args.pgd_steps} PGD steps (K), except rows that name K. Each cell: mean +- std over seeds "
        f"of the per-seed return ({args.episodes} episodes); worst = lowest mean of a-random, a-biggest, a-minq, "
        "a-minoaq.",
        "",
        "| method | " + " | ".join(f"worst @ eps {e}" for e in sweep) + " | train min |",
        "|---|" + "---|" * (len(sweep) + 1),
    ]
    # returns of order 10 (Reacher) need a decimal to be compared
    digits = 1 if max(abs(r["mean"]) for r in rows) < 100 else 0
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method in METHODS:
        cells, means, stds = [], [], []
        for eps in sweep:
            per_seed = worst_by(rows, method, eps)[:, 1]
            cells.append(f"{per_seed.mean():.{digits}f} +- {per_seed.std():.{digits}f}")
            means.append(per_seed.mean())
            stds.append(per_seed.std())
        minutes = train_minutes(runs, method, args.seeds)
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {minutes} |")
        ax.errorbar(sweep, means, yerr=stds, marker="o", capsize=3, label=method)
    natural = {m: worst_by(rows, m, sweep[0])[:, 0] for m in METHODS}
    lines += [
        "",
        "Natural return (no attack): "
        + ", ".join(
            f"{m} {v.mean():.{digits}f} +- {v.std():.{digits}f}" for m, v in natural.items()
        ),
        "",
        f"Produced by `python scripts/action_robustness_results.py --env {args.env} "
        f"--learning-starts {args.learning_starts} --seeds {args.seeds} --steps {args.steps} "
        f"--train-action-eps {args.train_action_eps} --pgd-steps {args.pgd_steps} "
        f"--pgd-ablation {args.pgd_ablation} --sweep {args.sweep} "
        f"--episodes {args.episodes}`; per-attack numbers in results.csv.",
        "",
        "![sweep](sweep.png)",
        "",
        "Evaluation mode: every return here is of the deterministic policy (the mean action, "
        "`evaluate_robustness(..., deterministic=True)`, the default of `robustrl attack`), "
        "clean and under attack alike.",
        "",
    ]
    ax.set_xlabel("action eps (normalised action units)")
    ax.set_ylabel("worst-attack return (mean +- std over seeds)")
    ax.set_title(f"{args.env}: TD3 vs OA-TD3 under action attacks")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=120)
    (out / "summary.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
