"""Results: the reference update order (critic first, actor against the updated critic) against
the fused order (one backward pass for every loss), issue 12.

For each algorithm, order and seed: train, evaluating the deterministic policy every
``--eval-every`` steps. Writes, under ``docs/results/update_order/<env>/``:

    runs.json          every run's evaluation curve and wall time (the script resumes from it)
    README.md          final return (mean of the last two evaluations) per seed, mean +- std,
                       area under the curve, steps/s, and the exact command
    curves.png         mean evaluation return vs steps per (algo, order), one band = min..max

One torch thread per run; ``--workers`` runs in parallel processes (2 on a 2-core machine).

    python scripts/update_order_results.py --env Pendulum-v1 --steps 10000 --algos sac,td3
    python scripts/update_order_results.py --env HalfCheetah-v5 --steps 40000 --algos sac \\
        --learning-starts 5000 --eval-every 5000 --workers 2
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ORDERS = ("sequential", "fused")


def run(env: str, algo: str, order: str, seed: int, args: dict) -> dict:
    import torch

    import robustrl

    torch.set_num_threads(1)
    section = "td3" if algo in ("td3", "oa-td3") else "sac"
    overrides = {f"{section}.update_order": order, **args["overrides"]}
    config = robustrl.build_config(
        algo,
        env,
        steps=args["steps"],
        seed=seed,
        learning_starts=args["learning_starts"],
        eval_every=args["eval_every"],
        eval_episodes=args["eval_episodes"],
        checkpoint_every=0,
        log_every=1000,
        compile=False,
        threads=1,
        overrides=overrides,
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = robustrl.train(config, out=tmp, name="run", progress=False)
        with open(run_dir / "evaluations.csv", newline="") as f:
            curve = [(int(r["step"]), float(r["mean"])) for r in csv.DictReader(f)]
    return {
        "env": env,
        "algo": algo,
        "order": order,
        "seed": seed,
        "curve": curve,
        "seconds": time.perf_counter() - start,
    }


def summarise(results: list[dict], out: Path, command: str, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [
        f"# Update order on {args.env}",
        "",
        "`sequential`: the critic steps first and the actor loss is evaluated with the updated",
        "critic (reference SAC/TD3; robustrl's default). `fused`: one backward pass for every",
        "loss, the actor following the critic as it was before the step. Everything else equal:",
        f"{args.steps} steps, {args.learning_starts} random warm-up steps, evaluation every",
        f"{args.eval_every} steps on {args.eval_episodes} deterministic episodes (clean, the",
        "policy's mean action), one torch thread per run. Final = mean of the last two",
        "evaluations; AUC = mean of every evaluation after the warm-up.",
        "",
        f"Command: `{command}`",
        "",
        "| algo | order | final per seed | final mean +- std | AUC mean +- std | steps/s |",
        "|---|---|---|---|---|---|",
    ]
    fig, ax = plt.subplots(figsize=(6, 4))
    for algo in args.algos.split(","):
        for order in ORDERS:
            rows = sorted(
                (r for r in results if r["algo"] == algo and r["order"] == order),
                key=lambda r: r["seed"],
            )
            if not rows:
                continue
            finals = [np.mean([m for _, m in r["curve"][-2:]]) for r in rows]
            aucs = [np.mean([m for s, m in r["curve"] if s > args.learning_starts]) for r in rows]
            speed = np.mean([args.steps / r["seconds"] for r in rows])
            seeds = " / ".join(f"{f:.0f} (s{r['seed']})" for f, r in zip(finals, rows))
            lines.append(
                f"| {algo} | {order} | {seeds} | {np.mean(finals):.0f} +- {np.std(finals):.0f} "
                f"| {np.mean(aucs):.0f} +- {np.std(aucs):.0f} | {speed:.0f} |"
            )
            steps = [s for s, _ in rows[0]["curve"]]
            if all(len(r["curve"]) == len(steps) for r in rows):
                values = np.array([[m for _, m in r["curve"]] for r in rows])
                (line,) = ax.plot(steps, values.mean(0), label=f"{algo} {order} (n={len(rows)})")
                ax.fill_between(
                    steps, values.min(0), values.max(0), alpha=0.2, color=line.get_color()
                )
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return")
    ax.set_title(f"{args.env}: update order")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)
    (out / "README.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--algos", default="sac,td3")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], help="extra dotted key=value")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    from robustrl.config import parse_set_args

    out = ROOT / "docs" / "results" / "update_order" / args.env
    out.mkdir(parents=True, exist_ok=True)
    path = out / "runs.json"
    results = json.loads(path.read_text()) if path.exists() else []
    done = {(r["algo"], r["order"], r["seed"]) for r in results}
    settings = {
        "steps": args.steps,
        "learning_starts": args.learning_starts,
        "eval_every": args.eval_every,
        "eval_episodes": args.eval_episodes,
        "overrides": parse_set_args(args.set),
    }
    todo = [
        (algo, order, int(seed))
        for seed in args.seeds.split(",")
        for algo in args.algos.split(",")
        for order in ORDERS
        if (algo, order, int(seed)) not in done
    ]
    command = "python scripts/update_order_results.py " + shlex.join(sys.argv[1:])
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(run, args.env, *cell, settings) for cell in todo]
        for future in as_completed(futures):
            result = future.result()
            results.append(result)
            path.write_text(json.dumps(results, indent=1))
            final = np.mean([m for _, m in result["curve"][-2:]])
            print(
                f"{result['algo']} {result['order']} seed {result['seed']}: final {final:.0f} "
                f"({result['seconds']:.0f} s)",
                flush=True,
            )
            summarise(results, out, command, args)
    if results:
        summarise(results, out, command, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
