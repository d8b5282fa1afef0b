"""Cost of the reference (sequential) update order against the fused one, side by side.

``sequential`` (the default): the critic loss is differentiated and the critic steps before the
actor loss is formed, so each update has two backward passes (critic, then actor + temperature
+ adversary); ``fused``: one backward pass over every loss. Same cases as ``update_cost.py``
(HalfCheetah dimensions, 2x256, batch 256, paper preset, schedules at full strength, eager),
interleaved rounds, best round kept; ratios to fused SAC. Updates docs/BENCHMARKS.md.

    python benchmarks/update_order.py [--threads N]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from sac_throughput import write_section  # noqa: E402
from update_cost import compare_per_thread_count, parse_args  # noqa: E402


def main() -> None:
    args = parse_args(__doc__)
    cases = []
    for label, algo in [
        ("SAC", "sac"),
        ("VALT-EPS-SAC", "valt-eps-sac"),
        ("VALT-SOFT-SAC", "valt-soft-sac"),
        ("TD3", "td3"),
    ]:
        section = "td3" if algo == "td3" else "sac"
        for order in ("fused", "sequential"):
            cases.append((f"{label} {order}", algo, {f"{section}.update_order": order}))
    tables = compare_per_thread_count(cases, args)
    report = (
        "Sequential (reference, default) vs fused update order. Paper HalfCheetah preset, 2x256 "
        f"networks, batch 256, HalfCheetah dimensions, eager, best of {args.repeats} interleaved "
        f"rounds of {args.updates} updates; TD3 with its actor step every 2nd update.\n\n"
        + "\n".join(tables)
    )
    print()
    print(report)
    if not args.no_write:
        write_section(ROOT / "docs" / "BENCHMARKS.md", "update_order", report)


if __name__ == "__main__":
    main()
