"""VALT-EPS: the eps-worst adversary derived from the agent's own critic (paper Eq. 12, App. C.1).

With an alpha-divergence soft constraint (alpha -> 0), the optimal adversary puts mass kappa on
the worst point of the ball and spreads the rest uniformly (ALGORITHMS.md §3):

    nu_eps(õ | o) = kappa * delta(õ - õ*(o)) + (1 - kappa) * Uniform(B_eps(o))
    õ*(o) ~= argmin_{õ in B_eps(o)} Qmean(o, tanh(mu(õ)))

so ``E_{nu_eps} V(o, õ) = kappa V(o, õ*) + (1 - kappa) V(o, õ_unif)`` with one uniform sample; SAC
evaluates both points in one batched pass (``adversaries.Mixture``). The PGD for ``õ*`` uses the
policy's deterministic action, the mean of the two online critics (weights detached) at the TRUE
observation, ignores the entropy term, starts uniformly at random in the ball and takes
``pgd_steps`` (2) signed-gradient steps of size eps / pgd_steps, projecting after each. Only the
input's gradient is computed. kappa grows linearly 0 -> 1 from step 0 to ``ramp_end``.

Behaviour (B): PGD per environment step is too costly, so a fraction ``behaviour_ratio`` (rho) of
the collected steps sees uniform noise in the ball instead.
"""

from __future__ import annotations

import torch

from robustrl.adversaries import (
    Adversary,
    Mixture,
    linear_ramp,
    project,
    set_value,
    uniform_in_ball,
)


def pgd_min_q(agent, obs: torch.Tensor, eps: float, steps: int) -> torch.Tensor:
    """``argmin_{õ in B_eps(obs)} mean_i Q_i(obs, tanh(mu(õ)))`` by PGD; detached (B, obs_dim)."""
    step_size = eps / steps
    x = uniform_in_ball(obs, eps).detach()
    for _ in range(steps):
        x.requires_grad_(True)
        with torch.enable_grad():
            q = agent.critic(obs, agent.actor.mean_action(x), detach=True).mean(0)
            (grad,) = torch.autograd.grad(q.sum(), x)
        x = project(obs, x.detach() - step_size * grad.sign(), eps)
    return x


class EpsWorstAdversary(Adversary):
    """The mixture ``kappa * delta(õ*) + (1 - kappa) * Uniform(B_eps)`` at (E) and (I)."""

    def __init__(
        self,
        eps: float,
        pgd_steps: int = 2,
        behaviour_ratio: float = 0.5,
        ramp_end: int = 0,
        in_target: bool = True,
        in_actor: bool = True,
    ):
        super().__init__(in_target, in_actor)
        self.eps, self.pgd_steps = eps, pgd_steps
        self.behaviour_ratio, self.ramp_end = behaviour_ratio, ramp_end
        # kappa, a schedule value set from the step (so not saved in checkpoints)
        self.register_buffer("kappa", torch.tensor(0.0 if ramp_end > 0 else 1.0), persistent=False)

    def on_step(self, step: int, total_steps: int) -> None:
        set_value(self.kappa, linear_ramp(step, 0, self.ramp_end))

    def behaviour(self, obs: torch.Tensor) -> torch.Tensor:
        perturbed = torch.rand(obs.shape[0], 1, device=obs.device) < self.behaviour_ratio
        return torch.where(perturbed, uniform_in_ball(obs, self.eps), obs)

    def mixture(self, obs: torch.Tensor, agent) -> Mixture:
        worst = pgd_min_q(agent, obs, self.eps, self.pgd_steps)
        uniform = uniform_in_ball(obs, self.eps)
        return Mixture(torch.stack([worst, uniform]), torch.stack([self.kappa, 1.0 - self.kappa]))

    def target(self, next_obs: torch.Tensor, agent) -> Mixture:
        return self.mixture(next_obs, agent)

    def actor(self, obs: torch.Tensor, agent) -> Mixture:
        return self.mixture(obs, agent)
