"""Every robust SAC method learns Pendulum-v1 with its adversary and regulariser active, and
ends up smoother under attack than an undefended agent.

Settings in ``tests/learning.py``: 10000 steps, 2x128 networks, eps 0.05 (normalised units), each
method's defaults (SA regulariser on, kappa and eps_reg ramped over the run); SAC-PPO's adversary
runs PPO iterations of 256 extra steps. Margins over seeds measured by
``scripts/learning_test_margins.py`` (docs/results/learning_tests/margins.md).

Robustness: the MAD attack at eps 0.05 moves the robust agent's deterministic action less (mean
L2 over 512 states of its own trajectories, ``learning.mad_action_shift``) than it moves the
fixed undefended SAC victim's (``tests/data/victims/pendulum_sac_128``: 0.603).

Measured over seeds 0-4 (margins.md): every method's deterministic mean -131..-144 (PA-SAC-PPO
seed 4: -203), threshold -300. MAD shift: Robust-SAC 0.36-0.45, VALT-EPS 0.39-0.52, VALT-SOFT
0.37-0.47, SAC-PPO 0.45-0.52, PA-SAC-PPO 0.34-0.39, against undefended SAC's 0.55-0.65 with the
same settings (10000 steps): every robust seed below every SAC seed, VALT-EPS by the thinnest
margin (its default regulariser coefficient is 1, Robust-SAC's 10).
"""

import csv

import pytest
from learning import ROBUST_EPS, mad_action_shift, train_and_evaluate

THRESHOLD = -300.0
METHODS = ["robust-sac", "valt-eps-sac", "valt-soft-sac", "sac-ppo", "pa-sac-ppo"]


def metrics(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def undefended_shift(shipped_victim):
    return mad_action_shift(shipped_victim("pendulum_sac_128"), ROBUST_EPS)


@pytest.mark.slow
@pytest.mark.parametrize("algo", METHODS)
def test_robust_method_learns_pendulum(algo, tmp_path, undefended_shift):
    run_dir, mean = train_and_evaluate(algo, 0, tmp_path)
    assert mean > THRESHOLD, (algo, mean)

    rows = [r for r in metrics(run_dir) if r["critic_loss"]]  # rows after learning started
    last = rows[-1]
    # the regulariser was active: its radius ramps up by 80% of the run, its term is positive
    assert float(last["reg_loss"]) > 0
    if algo == "valt-eps-sac":  # kappa reached 1: the critic target is the PGD point's
        assert float(last["adversary_kappa"]) == 1.0
    if algo == "valt-soft-sac":  # the adversary network trained (finite log-density, lambda 2)
        assert float(last["adversary_temperature"]) == 2.0
        assert len({r["adversary_log_prob"] for r in rows}) > 1
    if algo in ("sac-ppo", "pa-sac-ppo"):  # PPO iterations ran on extra env steps
        assert float(last["adversary_env_steps"]) > 0 and float(last["adversary_return"]) < 0

    shift = mad_action_shift(run_dir, ROBUST_EPS)
    assert shift < undefended_shift, (algo, shift, undefended_shift)
