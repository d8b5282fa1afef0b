"""Algorithms by name. Each robust method is a base algorithm plus an adversary and/or a regulariser."""

from __future__ import annotations

from torch import nn

from robustrl.algos.sac import SAC
from robustrl.config import SAC_ALGOS, TrainConfig


def make_agent(config: TrainConfig, obs_dim: int, act_dim: int, compile: bool = False) -> nn.Module:
    """The agent ``config.algo`` names, for these observation/action sizes."""
    if config.algo in SAC_ALGOS:
        from robustrl.robust import make_parts

        adversary, regulariser = make_parts(config, obs_dim, act_dim)
        return SAC(
            obs_dim,
            act_dim,
            config.sac,
            adversary=adversary,
            regulariser=regulariser,
            compile=compile,
            device=config.device,
        )
    from robustrl.algos.td3 import OATD3, TD3

    if config.algo == "td3":
        return TD3(obs_dim, act_dim, config.td3, compile=compile, device=config.device)
    return OATD3(obs_dim, act_dim, config.td3, config.oa, compile=compile, device=config.device)


__all__ = ["SAC", "make_agent"]
