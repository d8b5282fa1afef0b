"""Results: an undefended SAC agent on Hopper-v5 under the full attack suite (issue 3).

Trains (or resumes) SAC on Hopper-v5 with the paper's settings and a reduced budget, evaluates it
clean and under every attack at the paper's eps (0.075, normalised units), sweeps eps for the
attacks that need no training, and writes everything under ``docs/results/attack_suite/``:

    attacks.json / report.md / report.png   the suite at eps 0.075 (table in the paper's layout)
    sweep.json, sweep_eps_sweep.csv/.png     return vs eps per attack
    victim_metrics.csv, victim_evaluations.csv   the victim's training log
    README.md                                what was run, with timings

Rerun: ``python scripts/attack_suite_results.py`` (about 40 minutes on 2 CPU cores; the victim
run in ``runs/results/`` is reused or resumed, and fitted attackers are cached in it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import robustrl  # noqa: E402
from robustrl import checkpoint  # noqa: E402
from robustrl.cli import main as cli  # noqa: E402
from robustrl.report import build_report  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--steps", type=int, default=80_000, help="SAC training steps for the victim"
    )
    parser.add_argument(
        "--budget", type=int, default=30_000, help="env steps per learned attacker (sa-rl, pa-ad)"
    )
    parser.add_argument(
        "--rs-steps", type=int, default=30_000, help="Robust Sarsa gradient steps per critic"
    )
    parser.add_argument(
        "--rs-transitions", type=int, default=100_000, help="Robust Sarsa data (victim transitions)"
    )
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep", default="0,0.025,0.05,0.075,0.1,0.15")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "results"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "attack_suite"))
    args = parser.parse_args()
    out, runs = Path(args.out), Path(args.runs)
    out.mkdir(parents=True, exist_ok=True)
    run_dir = runs / f"hopper_sac_s{args.seed}"
    timings = {}

    start = time.perf_counter()
    if not run_dir.exists():
        config = robustrl.build_config(
            algo="sac",
            env="Hopper-v5",
            preset="paper",
            steps=args.steps,
            seed=args.seed,
            eval_every=10_000,
            checkpoint_every=10_000,
        )
        robustrl.train(config, out=runs, name=run_dir.name)
    else:
        done = checkpoint.read_json(checkpoint.latest(run_dir) / "state.json")["step"]
        if done < args.steps:
            robustrl.resume(run_dir, steps=args.steps)
    timings["train victim (or reuse)"] = time.perf_counter() - start

    rs = []
    for name in ("rs", "rs+mad"):
        rs += ["--attack-set", f"{name}.gradient_steps={args.rs_steps}"]
        rs += ["--attack-set", f"{name}.transitions={args.rs_transitions}"]

    def attack(*extra: str) -> None:
        common = ["--eps", "0.075", "--episodes", str(args.episodes), "--seed", str(args.seed)]
        code = cli(["attack", str(run_dir), *common, *extra])
        if code != 0:
            sys.exit(code)

    start = time.perf_counter()
    attack(
        "--attacks", "all", "--budget", str(args.budget), "--json", str(out / "attacks.json"), *rs
    )
    timings["full suite at eps 0.075"] = time.perf_counter() - start
    start = time.perf_counter()
    attack(
        "--attacks",
        "random,mad,pgd-minq,rs",
        "--eps-sweep",
        args.sweep,
        "--json",
        str(out / "sweep.json"),
        "--budget",  # caps Robust Sarsa's data as in the suite, so its cached critics are reused
        str(args.budget),
        *rs[:4],
    )
    timings["eps sweep (attacks without training)"] = time.perf_counter() - start

    build_report([out / "attacks.json"], out, title="Undefended SAC, Hopper-v5, eps 0.075")
    for name in ("metrics.csv", "evaluations.csv"):
        shutil.copy(run_dir / name, out / f"victim_{name}")
    record = json.loads((out / "attacks.json").read_text())
    lines = [
        "# Undefended SAC on Hopper-v5 under the attack suite",
        "",
        f"Produced by `python scripts/attack_suite_results.py --steps {args.steps} --budget {args.budget} "
        f"--rs-steps {args.rs_steps} --rs-transitions {args.rs_transitions} --episodes {args.episodes} "
        f"--seed {args.seed}` (robustrl {robustrl.__version__}).",
        "",
        f"Victim: SAC (paper settings, Hopper target entropy -1) trained {args.steps} steps, seed {args.seed}.",
        f"Attacks at eps 0.075 (normalised units, the paper's Hopper budget), {args.episodes} episodes each, "
        f"learned attackers trained {args.budget} env steps each; Robust Sarsa critics fitted with "
        f"{args.rs_steps} gradient steps on {min(args.rs_transitions, args.budget)} victim transitions "
        f"(`--budget` caps them; the paper's "
        f"defaults are 30000 and ~100000), scanning its default 2x2 (eps_rs, reg) grid.",
        "",
        (out / "report.md").read_text().split("\n", 2)[2],
        f"Worst attack: **{record['worst']['attack']}** ({record['worst']['mean']:.0f}).",
        "",
        "![suite](report.png)",
        "",
        "Eps sweep (random, MAD, PGD-minQ, Robust Sarsa): `sweep_eps_sweep.csv`,",
        "",
        "![sweep](sweep_eps_sweep.png)",
        "",
        "Wall-clock time on 2 CPU cores: "
        + "; ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items()),
        "",
    ]
    (out / "README.md").write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
