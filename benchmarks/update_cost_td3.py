"""Update cost of OA-TD3 relative to TD3 (and SAC), measured side by side in one run.

Same networks (2x256), batch 256, HalfCheetah dimensions (obs 17, act 6); OA-TD3 with its default
10 PGD steps and with 5, 3 and 1. Prints ms per update and ratios to TD3; updates docs/BENCHMARKS.md.
Issue 5's target: OA-TD3 <= 2.5x TD3 (the paper reports 3-5x slower training).

    python benchmarks/update_cost_td3.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from sac_throughput import write_section  # noqa: E402
from update_cost import BATCH, compare, parse_args  # noqa: E402


def main() -> None:
    args = parse_args(__doc__)
    cases = [
        ("TD3", "td3", {}),
        ("OA-TD3, 10 PGD steps (default)", "oa-td3", {}),
        ("OA-TD3, 5 PGD steps", "oa-td3", {"oa.pgd_steps": 5}),
        ("OA-TD3, 3 PGD steps", "oa-td3", {"oa.pgd_steps": 3}),
        ("OA-TD3, 1 PGD step (the floor of the method)", "oa-td3", {"oa.pgd_steps": 1}),
        ("OA-TD3, 10 PGD steps, no surgery", "oa-td3", {"oa.surgery": False}),
        ("SAC", "sac", {}),
    ]
    table = compare(cases, args)
    report = (
        f"2x256 networks, batch {BATCH}, HalfCheetah dimensions, eager, {torch.get_num_threads()} threads, "
        f"best of {args.repeats} interleaved rounds of {args.updates} updates. "
        f"Target: OA-TD3 <= 2.5x TD3.\n\n{table}\n"
    )
    print()
    print(report)
    if not args.no_write:
        write_section(ROOT / "docs" / "BENCHMARKS.md", "update_cost_td3", report)


if __name__ == "__main__":
    main()
