"""Every robust SAC method learns a trivial task (Pendulum-v1) within CI time.

A random policy scores about -1200 on Pendulum-v1 and a solved one about -150. Each method trains
10000 steps with 2x128 networks at a small budget (eps 0.05, normalised units) with its defaults
(SA regulariser on, kappa and eps_reg ramped over the run); SAC-PPO's adversary runs 10 PPO
iterations of 256 extra steps each. SAC solves the same evaluation in 7000 steps; at 7000 the
robust methods solved 9 of 10 evaluation episodes and failed the hardest start.
"""

import pytest

import robustrl

METHODS = {
    "robust-sac": {},
    "valt-eps-sac": {},
    "valt-soft-sac": {"adversary.hidden_sizes": [64, 64]},
    "sac-ppo": {"adversary.ppo_iterations": 10, "adversary.ppo.steps_per_iteration": 256},
    "pa-sac-ppo": {"adversary.ppo_iterations": 10, "adversary.ppo.steps_per_iteration": 256},
}


@pytest.mark.slow
@pytest.mark.parametrize("algo", list(METHODS))
def test_robust_method_learns_pendulum(algo, pendulum_config, tmp_path):
    config = pendulum_config(
        algo,
        steps=10_000,
        **{"sac.hidden_sizes": [128, 128], "sac.batch_size": 128, "adversary.eps": 0.05},
        **METHODS[algo],
    )
    run_dir = robustrl.train(config, out=tmp_path, name=algo, progress=False)
    result = robustrl.evaluate_run(run_dir, episodes=10, deterministic=True, seed=123)
    assert result.mean > -300, result.returns
