"""SAC, TD3 and OA-TD3 each learn Pendulum-v1 (random policy about -1200, solved about -150).

Settings in ``tests/learning.py``; margins over seeds measured by
``scripts/learning_test_margins.py`` (docs/results/learning_tests/margins.md), quoted per test.
"""

import csv

import pytest
from learning import train_and_evaluate

THRESHOLD = -300.0


def training_returns(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return [float(r["episode_return"]) for r in csv.DictReader(f) if r["episode_return"]]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, seed",
    [
        # deterministic means over seeds 0-4 (margins.md): SAC -133..-138 at 10000 steps (at
        # 7000 steps seed 1 failed, -432: hence 10000); TD3 -147..-167; OA-TD3 -149..-155.
        # The threshold -300 is > 130 above the worst seed of each.
        ("sac", 0),
        ("td3", 0),
        ("oa-td3", 0),
    ],
)
def test_learns_pendulum(name, seed, tmp_path):
    run_dir, mean = train_and_evaluate(name, seed, tmp_path)
    assert mean > THRESHOLD, (name, seed, mean)
    returns = training_returns(run_dir)
    assert returns[-1] > returns[0] + 500  # the training episodes improved too
