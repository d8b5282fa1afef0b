"""The learning tests' settings, shared by the tests and ``scripts/learning_test_margins.py``,
which measures each test's margin over several seeds (docs/results/learning_tests/).

Every algorithm's learning test trains it on Pendulum-v1 (random policy about -1200, solved about
-150) and evaluates the final policy deterministically on 10 episodes (seed 123).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import robustrl
from robustrl.attacks import make_attack
from robustrl.envs import make_env
from robustrl.threat import ObservationBall
from robustrl.views import load_view

EVAL_SEED, EVAL_EPISODES = 123, 10
ROBUST_EPS = 0.05  # training budget of the robust methods' learning tests (normalised units)
PPO_ADVERSARY = {"adversary.ppo_iterations": 10, "adversary.ppo.steps_per_iteration": 256}

# name -> (algo, steps, dotted overrides)
LEARNING = {
    # 7000 steps solved 3 of 4 seeds (seed 1: -432); 10000, like the robust methods, every one
    "sac": ("sac", 10_000, {"sac.hidden_sizes": [128, 128], "sac.batch_size": 128}),
    "td3": ("td3", 7000, {}),
    "oa-td3": ("oa-td3", 7000, {}),
    **{
        algo: (
            algo,
            10_000,
            {
                "sac.hidden_sizes": [128, 128],
                "sac.batch_size": 128,
                "adversary.eps": ROBUST_EPS,
                **extra,
            },
        )
        for algo, extra in {
            "robust-sac": {},
            "valt-eps-sac": {},
            "valt-soft-sac": {"adversary.hidden_sizes": [64, 64]},
            "sac-ppo": PPO_ADVERSARY,
            "pa-sac-ppo": PPO_ADVERSARY,
        }.items()
    },
}
for _name in ("td3", "oa-td3"):
    LEARNING[_name][2].update(
        {
            "td3.hidden_sizes": [64, 64],
            "td3.batch_size": 128,
            "td3.actor_lr": 1e-3,
            "td3.critic_lr": 1e-3,
            "oa.pgd_steps": 3,
        }
    )


def pendulum_config(algo: str, steps: int, seed: int, overrides: dict):
    """A Pendulum-v1 run of ``steps`` (1000 random warm-up steps), no periodic evaluation or
    checkpoint but the final one, eager, one torch thread."""
    return robustrl.build_config(
        algo=algo,
        env="Pendulum-v1",
        steps=steps,
        seed=seed,
        learning_starts=1000,
        eval_every=0,
        checkpoint_every=0,
        log_every=1000,
        compile=False,
        threads=1,
        overrides=overrides,
    )


def learning_config(name: str, seed: int):
    algo, steps, overrides = LEARNING[name]
    return pendulum_config(algo, steps, seed, overrides)


def train_and_evaluate(name: str, seed: int, out: Path) -> tuple[Path, float]:
    """Train one learning-test run; its run directory and deterministic evaluation mean."""
    with torch.random.fork_rng(devices=[]):
        run_dir = robustrl.train(
            learning_config(name, seed), out=out, name=f"{name}_s{seed}", progress=False
        )
    result = robustrl.evaluate_run(
        run_dir, episodes=EVAL_EPISODES, deterministic=True, seed=EVAL_SEED
    )
    return run_dir, result.mean


def mad_action_shift(run_dir: Path, eps: float = ROBUST_EPS, states: int = 512) -> float:
    """How far the MAD attack at ``eps`` moves the agent's deterministic action, mean L2 over
    ``states`` observations of the agent's own trajectories (seed 5): the policy smoothness
    that the SA regulariser (and the adversaries) train for; lower is more robust."""
    view = load_view(run_dir)
    policy = robustrl.load(run_dir)
    env = make_env("Pendulum-v1", seed=5)
    raw, obs = [], env.reset(seed=5)[0]
    for _ in range(states):
        raw.append(obs)
        obs, _, terminated, truncated, _ = env.step(policy.act(obs))
        if terminated or truncated:
            obs = env.reset()[0]
    batch = torch.from_numpy(view.normalize(np.array(raw, np.float32)))
    attack = make_attack("mad", view, ObservationBall(eps), seed=0)
    with torch.random.fork_rng(devices=[]):
        adv = attack.perturb(batch)
    with torch.no_grad():
        shift = view.mean_action(adv) - view.mean_action(batch)
    return float(shift.norm(dim=-1).mean())
