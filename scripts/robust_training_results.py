"""Results: SAC vs Robust-SAC vs VALT-EPS-SAC vs VALT-SOFT-SAC under the full attack suite (issue 4).

For every method and seed: train on a small task (default Pendulum-v1, see ``docs/results/
robust_training/README.md`` for why), then evaluate the agent clean and under every observation
attack at the task's eps (random, MAD, PGD-minQ/minV, Robust Sarsa (+MAD), SA-RL, PA-AD; the
learned attackers and Robust Sarsa are fitted against each agent). Writes, under ``--out``:

    runs/<method>_s<seed>.json   one agent's suite (the ``robustrl attack --json`` record)
    table.md / table.csv         natural, each attack, worst case: mean +- std across seeds
    runs/<method>_s<seed>_raw.json, table_raw_budget.md/.csv
                                 the same with one RAW budget per seed for every method (eps
                                 times the first method's normaliser std): the paper's protocol
                                 measures eps in each agent's own normalised units, and robust
                                 agents visit wider state distributions, so their normalised
                                 ball is larger in raw units
    worst_case.png               natural vs worst-case return per method, one dot per seed
    training_curves.png          clean evaluation return during training, per method
    README.md                    what was run, timings, the table

Resumable: finished training runs (in ``--runs``) and finished suites (JSON present with the same
settings) are reused, so an interrupted run continues where it stopped. Rerun:
``python scripts/robust_training_results.py`` (defaults reproduce the committed output).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

import robustrl  # noqa: E402
from robustrl import checkpoint  # noqa: E402
from robustrl.attacks import resolve_names  # noqa: E402
from robustrl.envs import make_env  # noqa: E402
from robustrl.robustness import evaluate_robustness  # noqa: E402
from robustrl.threat import ObservationBall  # noqa: E402
from robustrl.views import load_view  # noqa: E402

METHODS = "sac,robust-sac,valt-eps-sac,valt-soft-sac"


def train(method: str, seed: int, args, runs: Path) -> Path:
    run_dir = runs / f"{method}_s{seed}"
    if (run_dir / "checkpoints" / "latest.json").exists():
        done = checkpoint.read_json(checkpoint.latest(run_dir) / "state.json")["step"]
        if done < args.steps:
            robustrl.resume(run_dir, steps=args.steps, progress=False)
        return run_dir
    config = robustrl.build_config(
        method,
        args.env,
        steps=args.steps,
        seed=seed,
        learning_starts=args.learning_starts,
        eval_every=args.steps // 5,
        checkpoint_every=args.steps // 5,
        threads=1,
        overrides={
            "adversary.eps": args.eps,
            "sac.hidden_sizes": [args.hidden, args.hidden],
            "sac.batch_size": args.batch_size,
            **robustrl.config.parse_set_args(args.set),
        },
    )
    return robustrl.train(config, out=runs, name=run_dir.name, progress=False)


def attack(run_dir: Path, path: Path, args, attacks: str, reference_std=None) -> dict:
    """The suite on one agent, cached in ``path``. With ``reference_std`` the budget is
    ``eps * reference_std`` in RAW units (the same raw ball for every agent of a seed), converted
    to this agent's normalised units; without, ``eps`` in the agent's own normalised units."""
    settings_key = {k: getattr(args, k) for k in ("eps", "episodes", "budget", "steps")}
    settings_key["attacks"] = attacks
    if reference_std is not None:
        settings_key["reference_std"] = [float(x) for x in reference_std]
    if path.exists():
        record = json.loads(path.read_text())
        if record.get("settings") == settings_key:
            return record
    view = load_view(run_dir)
    names = resolve_names(attacks, view)
    ball = ObservationBall(args.eps)
    if reference_std is not None:
        ball = ObservationBall(
            tuple(float(r) for r in args.eps * np.asarray(reference_std) / view.obs_std)
        )
    rs = {"transitions": args.budget, "gradient_steps": args.rs_steps, "hidden_sizes": [128, 128]}
    record = evaluate_robustness(
        view,
        lambda: make_env(args.env),
        names,
        ball,
        episodes=args.episodes,
        seed=1000,
        settings={"rs": rs, "rs+mad": rs},
        budget=args.budget,
        cache_dir=run_dir / ("attackers" if reference_std is None else "attackers_raw"),
        progress=False,
        log=lambda line: print(f"    {run_dir.name}: {line.strip()}", flush=True),
    )
    record["settings"] = settings_key
    path.write_text(json.dumps(record, indent=2))
    return record


def summarise(records: dict[str, list[dict]], out: Path, args, stem: str = "table") -> str:
    """Table of mean +- std across seeds: natural, every attack, and the per-seed worst case;
    written to ``stem.md`` / ``stem.csv``."""
    attacks = [k for k in next(iter(records.values()))[0]["results"] if k != "none"]
    columns = ["natural", *attacks, "worst"]
    rows, csv_rows = [], []
    for method, seeds in records.items():
        values = {
            "natural": [r["results"]["none"]["mean"] for r in seeds],
            **{a: [r["results"][a]["mean"] for r in seeds] for a in attacks},
            "worst": [r["worst"]["mean"] for r in seeds],
        }
        cells = [f"{np.mean(values[c]):.0f} ± {np.std(values[c]):.0f}" for c in columns]
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
        for column in columns:
            csv_rows.append(
                {
                    "method": method,
                    "column": column,
                    **{f"seed{i}": v for i, v in enumerate(values[column])},
                }
            )
    header = "| method | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns)
    table = header + "\n" + "\n".join(rows)
    (out / f"{stem}.md").write_text(table + "\n")
    with open(out / f"{stem}.csv", "w", newline="") as f:
        fields = sorted({k for r in csv_rows for k in r}, key=lambda k: (k[:4] == "seed", k))
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(csv_rows)
    return table


def plot(records: dict[str, list[dict]], path: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, seeds in enumerate(records.values()):
        for offset, key, color in ((-0.15, "natural", "tab:blue"), (0.15, "worst", "tab:red")):
            values = [
                r["results"]["none"]["mean"] if key == "natural" else r["worst"]["mean"]
                for r in seeds
            ]
            ax.bar(
                i + offset,
                np.mean(values),
                width=0.3,
                color=color,
                alpha=0.5,
                label=key if i == 0 else None,
            )
            ax.scatter([i + offset] * len(values), values, color=color, s=12, zorder=3)
    ax.set_xticks(range(len(records)), list(records))
    ax.set_ylabel("return")
    ax.set_title(f"{args.env}, eps {args.eps}: natural vs worst attack ({len(args.seeds)} seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(runs: Path, methods: list[str], seeds: list[int], path: Path, args) -> None:
    """Clean evaluation return during training, mean and range across seeds, per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for method in methods:
        curves = []
        for seed in seeds:
            with open(runs / f"{method}_s{seed}" / "evaluations.csv") as f:
                rows = list(csv.DictReader(f))
            curves.append([(int(r["step"]), float(r["mean"])) for r in rows])
        steps = [s for s, _ in curves[0]]
        values = np.array([[v for _, v in c] for c in curves])
        ax.plot(steps, values.mean(0), label=method)
        ax.fill_between(steps, values.min(0), values.max(0), alpha=0.15)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("clean evaluation return")
    ax.set_title(f"{args.env}: training curves ({len(seeds)} seeds, mean and range)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--eps", type=float, default=0.3, help="attack and training budget")
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--seeds", default="0,1,2", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--attacks", default="all")
    parser.add_argument(
        "--raw-attacks",
        default="random,mad,pgd-minq,pa-ad",
        help="attacks of the second table, where every agent of a seed gets the same RAW budget",
    )
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--budget", type=int, default=5000, help="env steps per learned attacker")
    parser.add_argument("--rs-steps", type=int, default=3000, help="Robust Sarsa gradient steps")
    parser.add_argument("--set", action="append", default=[], help="extra key=value for training")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "robust_training"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "robust_training"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    out, runs = Path(args.out), Path(args.runs)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    methods = args.methods.split(",")
    records: dict[str, list[dict]] = {m: [] for m in methods}
    raw_records: dict[str, list[dict]] = {m: [] for m in methods}
    for seed in args.seeds:
        reference_std = None
        for method in methods:
            start = time.perf_counter()
            run_dir = train(method, seed, args, runs)
            trained = time.perf_counter() - start
            json_dir = out / "runs"
            record = attack(run_dir, json_dir / f"{method}_s{seed}.json", args, args.attacks)
            records[method].append(record)
            if reference_std is None:  # the first method's (SAC's) normaliser sets the raw ball
                reference_std = load_view(run_dir).obs_std
            raw = attack(
                run_dir,
                json_dir / f"{method}_s{seed}_raw.json",
                args,
                args.raw_attacks,
                reference_std,
            )
            raw_records[method].append(raw)
            print(
                f"{method} seed {seed}: natural {record['results']['none']['mean']:.0f}, worst "
                f"{record['worst']['mean']:.0f} ({record['worst']['attack']}), same raw budget: "
                f"{raw['worst']['mean']:.0f} ({raw['worst']['attack']}); "
                f"train {trained / 60:.1f} min",
                flush=True,
            )
    table = summarise(records, out, args)
    raw_table = summarise(raw_records, out, args, stem="table_raw_budget")
    plot(records, out / "worst_case.png", args)
    plot_curves(runs, methods, args.seeds, out / "training_curves.png", args)
    print(table)
    print("\nsame raw budget for every agent of a seed (eps x the first method's normaliser std):")
    print(raw_table)


if __name__ == "__main__":
    main()
