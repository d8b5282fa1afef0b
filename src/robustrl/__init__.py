"""robustrl: adversarially robust reinforcement learning.

Python API (mirrors the ``robustrl`` command)::

    import robustrl
    config = robustrl.build_config(algo="sac", env="Pendulum-v1", steps=20_000)
    run_dir = robustrl.train(config)            # robustrl train ...
    policy = robustrl.load(run_dir)             # acts on raw observations
    result = robustrl.evaluate_run(run_dir)     # robustrl evaluate RUN_DIR
"""

__version__ = "0.1.0"

from robustrl.config import TrainConfig, build_config  # noqa: E402
from robustrl.errors import RobustRLError  # noqa: E402
from robustrl.evaluation import EvalResult, evaluate, evaluate_run  # noqa: E402
from robustrl.policy import Policy, load  # noqa: E402
from robustrl.training import resume, train  # noqa: E402

__all__ = [
    "EvalResult",
    "Policy",
    "RobustRLError",
    "TrainConfig",
    "build_config",
    "evaluate",
    "evaluate_run",
    "load",
    "resume",
    "train",
]
