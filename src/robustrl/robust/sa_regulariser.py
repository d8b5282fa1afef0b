"""The SA-MDP policy regulariser of Robust-SAC (and of every VALT variant), paper Eq. 58.

    R = kappa_reg * E_o max_{õ in B_eps_reg(o)} D( pi(.|o), pi(.|õ) )

``D`` is the KL divergence between the pre-squash Gaussians ``N(mu(o), sigma(o))`` and
``N(mu(õ), sigma(õ))`` summed over action dimensions, or (``divergence="mean"``) SA-PPO's
mean-only ``|(mu(õ) - mu(o)) / sigma(o)|^2``. The inner max is solved by SGLD (ALGORITHMS.md §3):
a uniform start in the ball, K signed-gradient steps of size eps/K, each with Gaussian noise of
std ``step * (1 - k/K)`` (decaying to zero; the paper gives no scale, this is our documented
choice), projected onto the ball. The clean distribution ``pi(.|o)`` is a detached anchor: the
regulariser moves the policy's output on perturbed inputs towards its output on the clean input,
so the clean behaviour is shaped by SAC's objective alone.

``eps_reg`` grows linearly from 0 at ``ramp_start`` to its target at ``ramp_end`` (env steps).
At eps 0 every candidate is ``o`` itself and R is exactly zero.
"""

from __future__ import annotations

import torch

from robustrl.adversaries import (
    Regulariser,
    inner_autocast,
    linear_ramp,
    project,
    set_value,
    uniform_in_ball,
)
from robustrl.nets import SquashedGaussianActor


def gaussian_divergence(
    clean: tuple[torch.Tensor, torch.Tensor],
    perturbed: tuple[torch.Tensor, torch.Tensor],
    kind: str = "kl",
) -> torch.Tensor:
    """``D(N(mu0, s0), N(mu1, s1))`` per row (B,) from (mean, log-std) pairs, diagonal Gaussians."""
    (mu0, log_s0), (mu1, log_s1) = clean, perturbed
    if kind == "mean":
        return ((mu1 - mu0) / log_s0.exp()).pow(2).sum(-1)
    # KL(N0 || N1) = log(s1/s0) + (s0^2 + (mu0 - mu1)^2) / (2 s1^2) - 1/2
    var1 = (2.0 * log_s1).exp()
    kl = log_s1 - log_s0 + ((2.0 * log_s0).exp() + (mu0 - mu1).pow(2)) / (2.0 * var1) - 0.5
    return kl.sum(-1)


def sgld_max_divergence(
    actor: SquashedGaussianActor,
    obs: torch.Tensor,
    clean: tuple[torch.Tensor, torch.Tensor],
    eps: torch.Tensor,
    steps: int,
    kind: str = "kl",
    precision: str = "float32",
) -> torch.Tensor:
    """``argmax_{õ in B_eps(obs)} D(pi(.|o), pi(.|õ))`` by SGLD; detached (B, obs_dim).

    Only the input's gradient is computed (``autograd.grad`` w.r.t. ``õ``): no weight gradients.
    """
    step_size = eps / steps
    x = uniform_in_ball(obs, eps).detach()
    for k in range(steps):
        x.requires_grad_(True)
        with torch.enable_grad(), inner_autocast(precision, obs.device):
            divergence = gaussian_divergence(clean, actor.gaussian(x), kind)
            (grad,) = torch.autograd.grad(divergence.sum(), x)
        noise = torch.randn_like(x) * step_size * (1.0 - k / steps)
        x = project(obs, x.detach() + step_size * grad.sign() + noise, eps)
    return x


class SARegulariser(Regulariser):
    """``kappa_reg * E_o max_{õ in B} D(pi(.|o), pi(.|õ))``, added to SAC's actor loss."""

    active = True

    def __init__(
        self,
        eps: float,
        coef: float,
        sgld_steps: int,
        divergence: str = "kl",
        ramp_start: int = 0,
        ramp_end: int = 0,
        precision: str = "float32",
    ):
        super().__init__()
        self.precision = precision
        self.target_eps, self.coef, self.sgld_steps = eps, coef, sgld_steps
        self.divergence, self.ramp_start, self.ramp_end = divergence, ramp_start, ramp_end
        # the current radius, a schedule value (not part of the checkpoint: set from the step)
        self.register_buffer("eps", torch.tensor(0.0 if ramp_end > 0 else eps), persistent=False)

    def on_step(self, step: int, total_steps: int) -> None:
        set_value(self.eps, self.target_eps * linear_ramp(step, self.ramp_start, self.ramp_end))

    def forward(self, obs: torch.Tensor, agent) -> torch.Tensor:
        actor = agent.actor
        with torch.no_grad():  # the detached anchor: no graph to build
            clean = actor.gaussian(obs)
        worst = sgld_max_divergence(
            actor, obs, clean, self.eps, self.sgld_steps, self.divergence, self.precision
        )
        return self.coef * gaussian_divergence(clean, actor.gaussian(worst), self.divergence).mean()
