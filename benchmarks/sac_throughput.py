"""Steady-state SAC training throughput: robustrl vs Stable-Baselines3 (and SBX), in one run.

Same settings for every library: 2x256 ReLU MLPs, batch 256, one gradient update per env step,
replay capacity 1e6, after ``learning_starts`` random steps. The clock starts ``--warm`` steps after
learning starts (so torch.compile's compilation and the first updates are excluded; compilation
time is reported separately) and runs for ``--measure`` steps. Also reports the memory of a full
1M-transition prioritised replay buffer for HalfCheetah.

    python benchmarks/sac_throughput.py                 # prints a table, updates docs/BENCHMARKS.md
    python benchmarks/sac_throughput.py --measure 500   # quicker, noisier
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from robustrl.config import build_config  # noqa: E402
from robustrl.training import Trainer  # noqa: E402


def robustrl_steps_per_s(
    env: str, compile: bool, learning_starts: int, warm: int, measure: int
) -> tuple[float, float]:
    """Env steps/s of the real training loop (from metrics.csv windows) and compile seconds."""
    window = 250
    config = build_config(
        env=env,
        steps=learning_starts + warm + measure,
        learning_starts=learning_starts,
        eval_every=0,
        checkpoint_every=0,
        log_every=window,
        compile=compile,
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config, Path(tmp) / "run", progress=False)
        trainer.run()
        with open(Path(tmp) / "run" / "metrics.csv") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) > learning_starts + warm]
        seconds = sum(window / float(r["steps_per_s"]) for r in rows)
        return len(rows) * window / seconds, trainer.agent.compile_seconds


def sb3_steps_per_s(
    env: str, learning_starts: int, warm: int, measure: int, jax: bool = False
) -> float:
    import gymnasium as gym

    if jax:
        from sbx import SAC
    else:
        from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    start_at, stop_at = learning_starts + warm, learning_starts + warm + measure
    marks: dict[str, float] = {}

    class Clock(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps == start_at:
                marks["start"] = time.perf_counter()
            if self.num_timesteps == stop_at:
                marks["stop"] = time.perf_counter()
            return True

    kwargs = dict(
        learning_rate=3e-4,
        buffer_size=1_000_000,
        learning_starts=learning_starts,
        batch_size=256,
        tau=0.005,
        gamma=0.99,
        train_freq=1,
        gradient_steps=1,
        policy_kwargs=dict(net_arch=[256, 256]),
        seed=0,
        verbose=0,
    )
    if not jax:
        kwargs["device"] = "cpu"
    model = SAC("MlpPolicy", gym.make(env), **kwargs)
    model.learn(total_timesteps=stop_at, callback=Clock())
    return measure / (marks["stop"] - marks["start"])


def buffer_memory_mb() -> tuple[float, float]:
    """(array bytes, measured RSS growth) of a full 1M-transition PER buffer for HalfCheetah."""
    code = """
import numpy as np
from robustrl.replay import PrioritizedReplayBuffer

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

before = rss_mib()
b = PrioritizedReplayBuffer(1_000_000, 17, 6)
for name in ("obs", "next_obs", "action", "reward", "terminated"):
    getattr(b, name)[:] = 1.0   # touch every page
b.tree.set(np.arange(1_000_000), np.ones(1_000_000))
names = ("obs", "next_obs", "action", "reward", "terminated")
nbytes = sum(getattr(b, n).nbytes for n in names) + b.tree.nodes.nbytes
print(nbytes / 2**20, rss_mib() - before)
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--envs", default="HalfCheetah-v5,Hopper-v5")
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--warm", type=int, default=500)
    parser.add_argument("--measure", type=int, default=2000)
    parser.add_argument("--no-write", action="store_true", help="do not update docs/BENCHMARKS.md")
    args = parser.parse_args()
    try:
        import sbx  # noqa: F401

        have_sbx = True
    except ImportError:
        have_sbx = False

    rows = []
    for env in args.envs.split(","):
        steps = (args.learning_starts, args.warm, args.measure)
        eager, _ = robustrl_steps_per_s(env, False, *steps)
        compiled, compile_s = robustrl_steps_per_s(env, True, *steps)
        sb3 = sb3_steps_per_s(env, *steps)
        sbx_rate = sb3_steps_per_s(env, *steps, jax=True) if have_sbx else None
        rows.append((env, eager, compiled, compile_s, sb3, sbx_rate))
        print(
            f"{env}: robustrl eager {eager:.1f}/s, compiled {compiled:.1f}/s (compile {compile_s:.1f}s), "
            f"SB3 {sb3:.1f}/s" + (f", SBX {sbx_rate:.1f}/s" if sbx_rate else ""),
            flush=True,
        )
    array_mb, rss_mb = buffer_memory_mb()

    lines = [
        "| env | robustrl eager | robustrl compiled | compile time | SB3 SAC | SBX SAC | best robustrl / SB3 | best robustrl / SBX |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for env, eager, compiled, compile_s, sb3, sbx_rate in rows:
        best = max(eager, compiled)
        sbx_cell = f"{sbx_rate:.1f}" if sbx_rate else "not installed"
        sbx_ratio = f"{best / sbx_rate:.2f}x" if sbx_rate else "-"
        lines.append(
            f"| {env} | {eager:.1f} | {compiled:.1f} | {compile_s:.1f} s | {sb3:.1f} | {sbx_cell} | {best / sb3:.2f}x | {sbx_ratio} |"
        )
    table = "\n".join(lines)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads"
    report = (
        f"Env steps/s during training (1 update per step, 2x256, batch 256, after {args.learning_starts} random "
        f"steps + {args.warm} warm-up updates, measured over {args.measure} steps). Machine: {machine}.\n\n"
        f"{table}\n\n"
        f"Replay buffer, 1M transitions, HalfCheetah (obs 17, act 6), prioritised: arrays {array_mb:.0f} MiB, "
        f"measured resident memory growth {rss_mb:.0f} MiB (target <= 512 MiB).\n"
    )
    print()
    print(report)
    if not args.no_write:
        write_section(ROOT / "docs" / "BENCHMARKS.md", "sac_throughput", report)


def write_section(path: Path, name: str, body: str) -> None:
    """Replace (or append) the section between the markers for ``name`` in the benchmark page."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{body}{end}"
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n## `benchmarks/{name}.py`\n\n{block}\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
