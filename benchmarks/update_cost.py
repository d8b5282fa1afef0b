"""Update cost of the robust SAC methods relative to SAC, measured side by side in one run.

Paper settings (2x256 networks, batch 256) on HalfCheetah dimensions (obs 17, act 6), each method
with its paper preset for HalfCheetah (regulariser, SGLD steps, PGD steps) and its schedules at
full strength (kappa = 1, full eps_reg), eager PyTorch. Prints ms per update and ratios to SAC;
updates docs/BENCHMARKS.md. Issue 4's targets: VALT-EPS <= 2.0x SAC, VALT-SOFT <= 1.5x SAC (the
paper's implementation: 2.3x and 2.4x, its Table 12).

    python benchmarks/update_cost.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from sac_throughput import write_section  # noqa: E402

from robustrl.adversaries import resolve_precision  # noqa: E402
from robustrl.algos import make_agent  # noqa: E402
from robustrl.config import build_config  # noqa: E402

OBS, ACT, BATCH = 17, 6, 256


def make_case(algo: str, overrides: dict, preset: str | None = None):
    """An agent with its schedules at the end of training, 8 fixed random batches, warmed up."""
    config = build_config(algo=algo, env="HalfCheetah-v5", preset=preset, overrides=overrides)
    torch.manual_seed(0)
    agent = make_agent(config, OBS, ACT)
    agent.on_step(config.steps, config.steps)
    g = torch.Generator().manual_seed(0)
    batches = [
        {
            "obs": torch.randn(BATCH, OBS, generator=g),
            "action": torch.rand(BATCH, ACT, generator=g) * 2 - 1,
            "reward": torch.randn(BATCH, generator=g),
            "next_obs": torch.randn(BATCH, OBS, generator=g),
            "terminated": torch.zeros(BATCH),
            "weight": torch.ones(BATCH),
        }
        for _ in range(8)
    ]
    for i in range(20):  # warm-up
        agent.update(batches[i % 8])
    return agent, batches


def ms_per_update(agent, batches, updates: int) -> float:
    """Mean milliseconds of ``agent.update`` (the adversary's own learning step included)."""
    start = time.perf_counter()
    for i in range(updates):
        agent.update(batches[i % 8])
    return (time.perf_counter() - start) / updates * 1000


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: the script's default)"
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def compare(
    cases: list[tuple[str, str, dict]], args: argparse.Namespace, preset: str | None = None
) -> str:
    """Measure every (label, algo, overrides) case; a Markdown table of ms and ratios to the first.

    The repeats are interleaved (every case once per round) and each case keeps its best round,
    so a slow spell of this shared machine hits all cases alike instead of one of them."""
    built = [(label, *make_case(algo, overrides, preset)) for label, algo, overrides in cases]
    best = {label: float("inf") for label, *_ in built}
    for _ in range(args.repeats):
        for label, agent, batches in built:
            best[label] = min(best[label], ms_per_update(agent, batches, args.updates))
    for label, ms in best.items():
        print(f"{label}: {ms:.2f} ms/update", flush=True)
    rows = list(best.items())
    base_label, base = rows[0]
    return "\n".join(
        [f"| agent | ms / update | ratio to {base_label} |", "|---|---|---|"]
        + [f"| {label} | {ms:.2f} | {ms / base:.2f}x |" for label, ms in rows]
    )


def compare_per_thread_count(cases: list[tuple[str, str, dict]], args) -> list[str]:
    """``compare`` at 1 thread and at torch's default (or at ``--threads``): the ratios depend
    on the thread count (small matmuls scale worse), so one table per count."""
    counts = [args.threads] if args.threads else [1, torch.get_num_threads()]
    tables = []
    for threads in dict.fromkeys(counts):
        torch.set_num_threads(threads)
        print(f"-- {threads} thread(s)", flush=True)
        tables.append(f"{threads} thread(s):\n\n{compare(cases, args, preset='paper')}\n")
    return tables


def main() -> None:
    args = parse_args(__doc__)
    cases = [
        ("SAC", "sac", {}),
        ("Robust-SAC (SA reg., 5 SGLD steps)", "robust-sac", {}),
        ("VALT-EPS-SAC (2 PGD steps, SA reg. 2 SGLD)", "valt-eps-sac", {}),
        ("VALT-EPS-SAC without regulariser", "valt-eps-sac", {"regulariser.enabled": False}),
        ("VALT-SOFT-SAC (adversary update, SA reg. 2 SGLD)", "valt-soft-sac", {}),
        ("VALT-SOFT-SAC without regulariser", "valt-soft-sac", {"regulariser.enabled": False}),
    ]
    # the inner loops (PGD, SGLD) in float32, for comparison with the default ("auto")
    f32 = {"adversary.inner_precision": "float32"}
    float32_cases = [
        (f"{label}, float32 inner loops", algo, {**overrides, **f32})
        for label, algo, overrides in cases[1:]
        if overrides.get("regulariser.enabled", True)
    ]
    # VALT-SOFT's regulariser alone on SAC: its share of VALT-SOFT's cost
    regulariser_alone = (
        "SAC + VALT-SOFT's SA reg. alone (2 SGLD, coef 1)",
        "robust-sac",
        {"regulariser.sgld_steps": 2, "regulariser.coef": 1.0},
    )
    cases += [regulariser_alone, *float32_cases]
    tables = compare_per_thread_count(cases, args)
    report = (
        f"Inner-loop precision 'auto' resolves to "
        f"{resolve_precision('auto', torch.device('cpu'))} on this machine. "
        f"Paper HalfCheetah preset, 2x256 networks, batch {BATCH}, HalfCheetah dimensions, eager, "
        f"best of {args.repeats} interleaved rounds of {args.updates} updates. "
        f"Targets: VALT-EPS <= 2.0x SAC, VALT-SOFT <= 1.5x SAC (paper: 2.3x, 2.4x).\n\n"
        + "\n".join(tables)
    )
    print()
    print(report)
    if not args.no_write:
        write_section(ROOT / "docs" / "BENCHMARKS.md", "update_cost", report)


if __name__ == "__main__":
    main()
