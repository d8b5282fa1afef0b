"""Roll a policy out for a number of episodes and summarise the returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch

from robustrl.errors import ConfigError


class Actor(Protocol):
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Action in the env's units for one raw observation."""


@dataclass
class EvalResult:
    returns: list[float]
    lengths: list[int]
    deterministic: bool
    seed: int
    mean: float = field(init=False)
    std: float = field(init=False)
    min: float = field(init=False)
    max: float = field(init=False)

    def __post_init__(self) -> None:
        r = np.asarray(self.returns, np.float64)
        self.mean, self.std = float(r.mean()), float(r.std())
        self.min, self.max = float(r.min()), float(r.max())

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(
    policy: Actor, env: gym.Env, episodes: int = 10, deterministic: bool = True, seed: int = 0
) -> EvalResult:
    """Run ``episodes`` full episodes; the env is reset with ``seed`` once, then continues.

    Stochastic actions draw from a torch RNG forked and seeded here, so an evaluation is
    reproducible and leaves the caller's (training) random stream untouched.
    """
    returns, lengths = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        obs, _ = env.reset(seed=seed)
        for _ in range(episodes):
            done, total, length = False, 0.0, 0
            while not done:
                obs, reward, terminated, truncated, _ = env.step(policy.act(obs, deterministic))
                total += float(reward)
                length += 1
                done = terminated or truncated
            returns.append(total)
            lengths.append(length)
            obs, _ = env.reset()
    return EvalResult(returns, lengths, deterministic, seed)


def evaluate_run(
    run_dir: str | Path, episodes: int = 20, deterministic: bool = False, seed: int = 0
) -> EvalResult:
    """Evaluate a run's newest checkpoint on its own environment; write ``eval/clean.json``."""
    from robustrl import checkpoint
    from robustrl.envs import make_env
    from robustrl.policy import load

    if episodes <= 0:
        raise ConfigError(f"episodes must be > 0, got {episodes}")
    run_dir = Path(run_dir)
    policy = load(run_dir)
    env = make_env(policy.config.env, **policy.config.env_kwargs)
    try:
        result = evaluate(policy, env, episodes, deterministic, seed)
    finally:
        env.close()
    (run_dir / "eval").mkdir(exist_ok=True)
    record = {
        "env": policy.config.env,
        "checkpoint_step": policy.step,
        "episodes": episodes,
        **result.to_dict(),
    }
    checkpoint.write_json(run_dir / "eval" / "clean.json", record)
    return result
