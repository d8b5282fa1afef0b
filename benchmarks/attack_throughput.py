"""Evaluation speed under attack: env steps/s of clean vs PGD-minQ (10 steps) rollouts, in one run.

The victim is a SAC agent on Hopper-v5 with the paper's 2x256 networks (briefly trained: the
cost per step does not depend on how good it is). Rollouts run ``n_envs`` episodes in parallel
and batch the attack across them; the table shows how batching pays.

    python benchmarks/attack_throughput.py            # updates docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from sac_throughput import write_section  # noqa: E402

from robustrl.attacks import make_attack  # noqa: E402
from robustrl.config import build_config  # noqa: E402
from robustrl.envs import make_env  # noqa: E402
from robustrl.evaluation import rollout  # noqa: E402
from robustrl.threat import ObservationBall  # noqa: E402
from robustrl.training import train  # noqa: E402
from robustrl.views import load_view  # noqa: E402


def steps_per_s(view, attack, ball, episodes: int, n_envs: int) -> tuple[float, float]:
    make = lambda: make_env(view.env_id)  # noqa: E731
    start = time.perf_counter()
    perturb = attack.perturb if attack is not None else None
    result = rollout(view, make, episodes, perturb=perturb, ball=ball, seed=0, n_envs=n_envs)
    seconds = time.perf_counter() - start
    return sum(result.lengths) / seconds, sum(result.lengths) / episodes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="Hopper-v5")
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=3000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = build_config(
            env=args.env,
            steps=args.train_steps,
            learning_starts=1000,
            eval_every=0,
            checkpoint_every=0,
            compile=False,
        )
        view = load_view(train(config, out=tmp, name="victim", progress=False))
        ball = ObservationBall(0.075)
        rows = []
        for n_envs in (1, 8, 16):
            clean, length = steps_per_s(view, None, ball, args.episodes, n_envs)
            pgd, _ = steps_per_s(
                view, make_attack("pgd-minq", view, ball), ball, args.episodes, n_envs
            )
            rows.append((n_envs, clean, pgd, length))
            print(
                f"n_envs={n_envs}: clean {clean:.0f} steps/s, pgd-minq {pgd:.0f} steps/s (episode length {length:.0f})"
            )
    lines = [
        "| parallel envs | clean steps/s | pgd-minq (10 steps) steps/s | pgd-minq / clean |",
        "|---|---|---|---|",
        *(f"| {n} | {c:.0f} | {p:.0f} | {p / c:.2f} |" for n, c, p, _ in rows),
    ]
    report = (
        f"{args.env}, SAC victim with 2x256 networks trained {args.train_steps} steps (mean episode length "
        f"{rows[0][3]:.0f}), eps 0.075, {args.episodes} episodes per cell. Target: >= 300 steps/s under "
        f"pgd-minq on 2 cores.\n\n" + "\n".join(lines) + "\n"
    )
    print()
    print(report)
    if not args.no_write:
        write_section(ROOT / "docs" / "BENCHMARKS.md", "attack_throughput", report)


if __name__ == "__main__":
    main()
