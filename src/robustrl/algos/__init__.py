"""Algorithms by name. Each robust method is SAC plus an adversary and/or a regulariser."""

from __future__ import annotations

from robustrl.algos.sac import SAC
from robustrl.config import TrainConfig


def make_agent(config: TrainConfig, obs_dim: int, act_dim: int, compile: bool = False) -> SAC:
    """The agent ``config.algo`` names, for these observation/action sizes."""
    # Only SAC so far; robust methods will pass their adversary and regulariser here.
    return SAC(obs_dim, act_dim, config.sac, compile=compile, device=config.device)


__all__ = ["SAC", "make_agent"]
