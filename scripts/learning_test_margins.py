"""Measure the margin of every learning test over several seeds (issue 12).

The learning tests (``tests/learning.py``) train each algorithm on Pendulum-v1 and require a
deterministic evaluation mean above a threshold. Floating-point kernels differ between CPUs of the
same kind and RL amplifies the difference, so a test must not hinge on one seed: this script
trains every learning test's configuration with several seeds, and for the robust methods also
measures how far the MAD attack at the training eps moves the action (``mad_action_shift``),
against the undefended SAC of the same script. Writes ``docs/results/learning_tests/margins.json``
and ``margins.md``; resumable (finished cells are kept in the JSON).

    python scripts/learning_test_margins.py                      # every test, seeds 0-4
    python scripts/learning_test_margins.py --tests sac,td3 --seeds 0,1,2 --workers 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from learning import LEARNING, mad_action_shift, train_and_evaluate  # noqa: E402

OUT = ROOT / "docs" / "results" / "learning_tests"


def cell(name: str, seed: int) -> dict:
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir, mean = train_and_evaluate(name, seed, Path(tmp))
        shift = mad_action_shift(run_dir)
    return {
        "test": name,
        "seed": seed,
        "eval_mean": mean,
        "mad_shift": shift,
        "seconds": time.perf_counter() - start,
    }


def write_markdown(results: list[dict]) -> None:
    lines = [
        "# Learning-test margins",
        "",
        "Each learning test's configuration (`tests/learning.py`) trained with several seeds on",
        "Pendulum-v1 (random policy about -1200, solved about -150); deterministic evaluation,",
        "10 episodes, seed 123. `MAD shift`: mean L2 distance the MAD attack at eps 0.05 moves the",
        "deterministic action on 512 states of the agent's own trajectories (lower = smoother).",
        "Produced by `python scripts/learning_test_margins.py` (one torch thread per cell).",
        "",
        "| test | seeds | eval mean per seed | worst | median | MAD shift per seed | s per run |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in LEARNING:
        rows = sorted((r for r in results if r["test"] == name), key=lambda r: r["seed"])
        if not rows:
            continue
        means = [r["eval_mean"] for r in rows]
        shifts = " / ".join(f"{r['mad_shift']:.3f}" for r in rows)
        lines.append(
            f"| {name} | {','.join(str(r['seed']) for r in rows)} "
            f"| {' / '.join(f'{m:.0f}' for m in means)} | {min(means):.0f} "
            f"| {np.median(means):.0f} | {shifts} "
            f"| {np.mean([r['seconds'] for r in rows]):.0f} |"
        )
    (OUT / "margins.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", default=",".join(LEARNING))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "margins.json"
    results = json.loads(path.read_text()) if path.exists() else []
    done = {(r["test"], r["seed"]) for r in results}
    todo = [
        (name, int(seed))
        for seed in args.seeds.split(",")
        for name in args.tests.split(",")
        if (name, int(seed)) not in done
    ]
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(cell, name, seed) for name, seed in todo]
        for future in as_completed(futures):
            result = future.result()
            print(
                f"{result['test']} seed {result['seed']}: {result['eval_mean']:.0f} "
                f"(MAD shift {result['mad_shift']:.3f}, {result['seconds']:.0f} s)",
                flush=True,
            )
            results.append(result)
            path.write_text(json.dumps(results, indent=1))
            write_markdown(results)
    write_markdown(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
