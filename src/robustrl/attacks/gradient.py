"""Gradient attacks on the victim's own networks: Random, MAD, PGD-minQ, PGD-minV (ALGORITHMS.md §4).

All differentiate with respect to the observation only (``torch.autograd.grad`` on the input: no
weight-gradient work), start at a uniform random point of the ball, take signed-gradient steps
projected back onto the ball, and return the best iterate found per observation.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.distributions import kl_divergence

from robustrl.attacks.base import Attack, AttackConfig
from robustrl.threat import ObservationBall


def signed_gradient_descent(
    ball: ObservationBall,
    obs: torch.Tensor,
    objective: Callable[[torch.Tensor], torch.Tensor],
    steps: int,
    step_size: float | None,
    start: torch.Tensor,
    noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Minimise ``objective(õ)`` (B,) over ``õ`` in the ball around ``obs`` (B, obs_dim).

    ``steps`` signed-gradient steps of ``step_size`` (default: radius / steps) from ``start``,
    each followed by projection; with ``noise > 0`` (SGLD) a Gaussian of std ``noise * step``,
    decaying linearly to zero, is added to each step. Returns the iterate with the lowest
    objective per row (the start included).
    """
    radius = ball.radius(obs)
    step = radius / steps if step_size is None else torch.as_tensor(step_size, dtype=obs.dtype)
    x = start.detach()
    best, best_value = x, None
    for k in range(steps + 1):
        x = x.detach().requires_grad_(k < steps)
        with torch.enable_grad():
            value = objective(x)
            if k < steps:
                (grad,) = torch.autograd.grad(value.sum(), x)
        value = value.detach()
        if best_value is None:
            best, best_value = x.detach(), value
        else:
            better = value < best_value
            best = torch.where(better.unsqueeze(-1), x.detach(), best)
            best_value = torch.where(better, value, best_value)
        if k < steps:
            move = -step * grad.sign()
            if noise > 0:
                decay = 1.0 - k / steps
                move = move + noise * decay * step * torch.randn(
                    x.shape, generator=generator, dtype=x.dtype
                )
            x = ball.project(obs, x.detach() + move)
    return best


@dataclass
class RandomConfig(AttackConfig):
    pass


class RandomAttack(Attack):
    """``õ = o + U(-eps, eps)``."""

    name = "random"
    config_class = RandomConfig
    description = "uniform noise in the ball"

    def perturb(self, obs: torch.Tensor) -> torch.Tensor:
        return self.uniform_start(obs)


@dataclass
class PGDConfig(AttackConfig):
    steps: int = 10
    step_size: float | None = None  # None: eps / steps
    random_start: bool = True


class _PGDAttack(Attack):
    config_class = PGDConfig

    @abstractmethod
    def objective(self, obs: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        """Value (B,) to minimise at perturbed observations ``adv``."""

    def perturb(self, obs: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        start = self.uniform_start(obs) if cfg.random_start else obs
        return signed_gradient_descent(
            self.ball, obs, lambda adv: self.objective(obs, adv), cfg.steps, cfg.step_size, start
        )


class PGDMinQ(_PGDAttack):
    """Minimise the victim's mean critic ``Qmean(o, tanh(mu(õ)))``; the critic sees the true ``o``."""

    name = "pgd-minq"
    requires = ("q_value",)
    description = "PGD minimising the victim's Q(o, pi(õ))"

    def objective(self, obs: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        return self.view.q_value(obs, self.view.mean_action(adv))


class PGDMinV(_PGDAttack):
    """Minimise the victim's state-value critic ``V(õ)`` (PPO agents)."""

    name = "pgd-minv"
    requires = ("state_value",)
    description = "PGD minimising the victim's V(õ)"

    def objective(self, obs: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        return self.view.state_value(adv)


@dataclass
class MADConfig(AttackConfig):
    steps: int = 10
    step_size: float | None = None  # None: eps / steps
    noise: float = 1.0  # SGLD noise std in units of the step, decaying linearly to 0


class MADAttack(Attack):
    """Maximise ``KL(pi(.|o) || pi(.|õ))`` between the victim's Gaussians by SGLD (random start)."""

    name = "mad"
    config_class = MADConfig
    description = "SGLD maximising the KL between pi(.|o) and pi(.|õ)"

    def perturb(self, obs: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        with torch.no_grad():
            clean = self.view.distribution(obs)

        def negative_kl(adv: torch.Tensor) -> torch.Tensor:
            return -kl_divergence(clean, self.view.distribution(adv)).sum(-1)

        return signed_gradient_descent(
            self.ball,
            obs,
            negative_kl,
            cfg.steps,
            cfg.step_size,
            self.uniform_start(obs),
            cfg.noise,
            self.generator,
        )
