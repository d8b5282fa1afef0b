"""Observation-robust SAC methods: each is SAC plus a small adversary and/or regulariser.

| method          | adversary (B, E, I, L)                         | regulariser            |
|-----------------|------------------------------------------------|------------------------|
| robust-sac      | none                                           | SA, 5 SGLD steps       |
| valt-eps-sac    | ``EpsWorstAdversary`` (PGD mixture)            | SA, 2 SGLD steps       |
| valt-soft-sac   | ``SoftWorstAdversary`` (learned soft-worst)    | SA, 2 SGLD steps       |
| sac-ppo         | ``PPOAdversary`` (PPO on -r, extra env steps)  | SA, 2 SGLD steps       |
| pa-sac-ppo      | ``PPOAdversary`` with a PA-AD director         | SA, 2 SGLD steps       |

``make_parts(config, obs_dim, act_dim)`` builds both from a ``TrainConfig``; ``ALGORITHMS.md §3`` is the
specification.
"""

from __future__ import annotations

import torch

from robustrl.adversaries import Adversary, Regulariser, resolve_precision
from robustrl.config import TrainConfig
from robustrl.robust.eps_worst import EpsWorstAdversary
from robustrl.robust.sa_regulariser import SARegulariser
from robustrl.robust.soft_worst import SoftWorstAdversary


def make_parts(
    config: TrainConfig, obs_dim: int, act_dim: int
) -> tuple[Adversary | None, Regulariser | None]:
    """The adversary and regulariser of ``config.algo`` (None, None for plain SAC)."""
    if config.algo == "sac":
        return None, None
    adv, reg = config.adversary, config.regulariser
    if adv.eps is None:  # build_config resolves it; a hand-made TrainConfig may not have
        config.resolve_eps()
    config.resolve_schedules()
    eps = float(adv.eps)
    precision = resolve_precision(adv.inner_precision, torch.device(config.device))
    regulariser = None
    if reg.enabled and reg.coef > 0:
        regulariser = SARegulariser(
            eps=eps if reg.eps is None else reg.eps,
            coef=reg.coef,
            sgld_steps=reg.sgld_steps,
            divergence=reg.divergence,
            ramp_start=reg.ramp_start,
            ramp_end=reg.ramp_end,
            precision=precision,
        )
    switches = {"in_target": adv.in_target, "in_actor": adv.in_actor}
    if config.algo == "robust-sac":
        adversary = None
    elif config.algo == "valt-eps-sac":
        adversary = EpsWorstAdversary(
            eps,
            pgd_steps=adv.pgd_steps,
            behaviour_ratio=adv.behaviour_ratio,
            ramp_end=adv.ramp_end,
            precision=precision,
            **switches,
        )
    elif config.algo == "valt-soft-sac":
        adversary = SoftWorstAdversary(
            obs_dim,
            eps,
            adv.hidden_sizes,
            lr=adv.lr,
            temperature=adv.temperature,
            temperature_start=adv.temperature_start,
            ramp_end=adv.ramp_end,
            reset_every=adv.reset_every,
            behaviour_ratio=adv.behaviour_ratio,
            kl_in_target=adv.kl_in_target,
            **switches,
        )
    else:  # sac-ppo, pa-sac-ppo
        from robustrl.robust.ppo_adversary import PPOAdversary

        adversary = PPOAdversary(
            config, obs_dim, act_dim, director=config.algo == "pa-sac-ppo", **switches
        )
    return adversary, regulariser


__all__ = ["EpsWorstAdversary", "SARegulariser", "SoftWorstAdversary", "make_parts"]
