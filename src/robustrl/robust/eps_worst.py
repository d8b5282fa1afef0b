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
    inner_autocast,
    linear_ramp,
    project,
    set_value,
    uniform_in_ball,
)


def pgd_min_q(
    agent, obs: torch.Tensor, eps: float, steps: int, precision: str = "float32"
) -> torch.Tensor:
    """``argmin_{õ in B_eps(obs)} mean_i Q_i(obs, tanh(mu(õ)))`` by PGD; detached (B, obs_dim).

    ``precision="bfloat16"`` runs the network passes under autocast (``inner_autocast``)."""
    step_size = eps / steps
    x = uniform_in_ball(obs, eps).detach()
    for _ in range(steps):
        x.requires_grad_(True)
        with torch.enable_grad(), inner_autocast(precision, obs.device):
            q = agent.critic(obs, agent.actor.mean_action(x), detach=True).mean(0)
            (grad,) = torch.autograd.grad(q.sum(), x)
        x = project(obs, x.detach() - step_size * grad.sign(), eps)
    return x


class EpsWorstAdversary(Adversary):
    """The mixture ``kappa * delta(õ*) + (1 - kappa) * Uniform(B_eps)`` at (E) and (I)."""

    metric_names = ("adversary_kappa",)  # logged so a run shows the PGD point's weight

    def __init__(
        self,
        eps: float,
        pgd_steps: int = 2,
        behaviour_ratio: float = 0.5,
        ramp_end: int = 0,
        in_target: bool = True,
        in_actor: bool = True,
        precision: str = "float32",
    ):
        super().__init__(in_target, in_actor)
        self.eps, self.pgd_steps, self.precision = eps, pgd_steps, precision
        self.behaviour_ratio, self.ramp_end = behaviour_ratio, ramp_end
        # kappa, a schedule value set from the step (so not saved in checkpoints)
        self.kappa_value = 0.0 if ramp_end > 0 else 1.0  # the same number as a Python float
        self.register_buffer("kappa", torch.tensor(self.kappa_value), persistent=False)

    def on_step(self, step: int, total_steps: int) -> None:
        self.kappa_value = linear_ramp(step, 0, self.ramp_end)
        set_value(self.kappa, self.kappa_value)

    def behaviour(self, obs: torch.Tensor) -> torch.Tensor:
        perturbed = torch.rand(obs.shape[0], 1, device=obs.device) < self.behaviour_ratio
        return torch.where(perturbed, uniform_in_ball(obs, self.eps), obs)

    def learn(self, batch, agent) -> torch.Tensor:
        """Nothing to learn (the adversary is the critic's own PGD); reports kappa."""
        return self.kappa.reshape(1).clone()

    def mixture(self, obs: torch.Tensor, agent, worst: torch.Tensor | None = None) -> Mixture:
        """The mixture at ``obs``; ``worst`` is the PGD point when already computed.

        Points of weight 0 (kappa exactly 0 or 1, before and after the ramp) are left out: the
        expectation is the same and their cost is saved.
        """
        kappa = self.kappa_value
        points, weights = [], []
        if kappa > 0.0:
            points.append(self.pgd(agent, obs) if worst is None else worst)
            weights.append(self.kappa)
        if kappa < 1.0:
            points.append(uniform_in_ball(obs, self.eps))
            weights.append(1.0 - self.kappa)
        return Mixture(torch.stack(points), torch.stack(weights))

    def pgd(self, agent, obs: torch.Tensor) -> torch.Tensor:
        return pgd_min_q(agent, obs, self.eps, self.pgd_steps, self.precision)

    def target(self, next_obs: torch.Tensor, agent) -> Mixture:
        return self.mixture(next_obs, agent)

    def actor(self, obs: torch.Tensor, agent) -> Mixture:
        return self.mixture(obs, agent)

    def observations(self, obs: torch.Tensor, next_obs: torch.Tensor, agent):
        if not (self.in_target and self.in_actor and self.kappa_value > 0.0):
            return super().observations(obs, next_obs, agent)
        # one PGD over both batches: same result, half the passes
        worst_next, worst = self.pgd(agent, torch.cat([next_obs, obs])).chunk(2)
        return self.mixture(next_obs, agent, worst_next), self.mixture(obs, agent, worst)
