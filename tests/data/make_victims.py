"""Train the fixed-weight victims that the attack tests attack, and write them as test data.

Attack tests check properties of attacks (they stay in their ball, they lower an undefended
agent's return more than random noise). Trained inside the test session, the victim itself would
differ between machines: float kernels differ between CPUs, RL amplifies the difference, and one
short SAC run that solved Pendulum on one machine failed on another. So the tests attack agents
whose weights are fixed, trained once by this script and shipped in ``tests/data/victims/<name>/``
as a minimal robustrl run directory: ``config.json`` and the newest checkpoint's
``model.safetensors`` + ``state.json`` (no optimiser state, no replay buffer, no logs), which
``robustrl.load`` / ``load_view`` open like any run.

Each victim is trained with the first seed that reaches the quality bar: over 10 deterministic
evaluation episodes (seeds 1000-1009) a mean above -200 and every episode above -400 (every
start swung up). The script prints what every seed got.

    python tests/data/make_victims.py            # every victim
    python tests/data/make_victims.py --name pendulum_sac_64 --seeds 0,1,2

Victims (Pendulum-v1: random policy about -1200, solved about -150):

- ``pendulum_sac_128``: SAC 2x128, batch 128, 7000 steps (1000 random), lr 3e-4.
- ``pendulum_sac_64``: SAC 2x64, batch 128, 5000 steps (1000 random), lr 1e-3.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import robustrl
from robustrl import checkpoint
from robustrl.envs import make_env
from robustrl.evaluation import rollout
from robustrl.views import load_view

HERE = Path(__file__).resolve().parent / "victims"
sys.path.insert(0, str(HERE.parents[1]))  # tests/, for the shared run settings
from learning import pendulum_config  # noqa: E402

MEAN_BAR, WORST_BAR = -200.0, -400.0

VICTIMS = {
    "pendulum_sac_128": dict(
        steps=7000,
        overrides={"sac.hidden_sizes": [128, 128], "sac.batch_size": 128},
    ),
    "pendulum_sac_64": dict(
        steps=5000,
        overrides={
            "sac.hidden_sizes": [64, 64],
            "sac.batch_size": 128,
            "sac.actor_lr": 1e-3,
            "sac.critic_lr": 1e-3,
        },
    ),
}


def train(name: str, seed: int, out: Path) -> Path:
    spec = VICTIMS[name]
    config = pendulum_config("sac", spec["steps"], seed, spec["overrides"])
    return robustrl.train(config, out=out, name=f"{name}_s{seed}", progress=False)


def quality(run_dir: Path) -> np.ndarray:
    result = rollout(load_view(run_dir), lambda: make_env("Pendulum-v1"), 10, seed=1000)
    return np.asarray(result.returns)


def ship(run_dir: Path, dest: Path, returns: np.ndarray) -> None:
    """Copy the minimal run directory: config.json and the newest checkpoint's model + state."""
    folder = checkpoint.latest(run_dir)
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "checkpoints" / folder.name).mkdir(parents=True)
    shutil.copy(run_dir / "config.json", dest / "config.json")
    for file in ("model.safetensors", "state.json"):
        shutil.copy(folder / file, dest / "checkpoints" / folder.name / file)
    checkpoint.write_json(
        dest / "checkpoints" / "latest.json",
        json.loads((run_dir / "checkpoints" / "latest.json").read_text()),
    )
    checkpoint.write_json(
        dest / "victim.json",
        {
            "made_by": "tests/data/make_victims.py",
            "torch": torch.__version__,
            "eval_seeds": "1000-1009 (deterministic)",
            "returns": [round(float(r), 1) for r in returns],
            "mean": round(float(returns.mean()), 1),
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", choices=sorted(VICTIMS), action="append")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    for name in args.name or sorted(VICTIMS):
        with tempfile.TemporaryDirectory() as tmp:
            for seed in seeds:
                run_dir = train(name, seed, Path(tmp))
                returns = quality(run_dir)
                ok = returns.mean() > MEAN_BAR and returns.min() > WORST_BAR
                print(
                    f"{name} seed {seed}: mean {returns.mean():.0f}, min {returns.min():.0f}"
                    f" ({'kept' if ok else 'below the bar'})",
                    flush=True,
                )
                if ok:
                    ship(run_dir, HERE / name, returns)
                    break
            else:
                print(f"{name}: no seed reached the bar", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
