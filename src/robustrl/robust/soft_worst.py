"""VALT-SOFT: a learned soft-worst adversary (paper Lemma 4.7, Eq. 10 and 57, App. C.2).

With a KL soft constraint and a uniform prior ``p`` on the ball, the soft-worst adversary is

    nu*(õ | o) = p(õ | o) exp(-V(o, õ) / lambda) / Z(o)

A network ``nu_psi`` (the policy's architecture, output dimension = observation dimension) with
``õ = o + eps * tanh(z)``, ``z ~ N(m_psi(o), s_psi(o))``, approximates it by minimising
``KL(nu_psi || nu*)``, which up to a constant is (ALGORITHMS.md §3)

    L_nu = E_o E_{õ ~ nu_psi(.|o)} [ V(o, õ) + lambda log nu_psi(õ | o) ]

a reparameterised SAC-actor loss that *minimises* the agent's soft value with temperature lambda.
``V`` is SAC's ``soft_value`` (target critics at the TRUE observation, policy on õ); only the
adversary's parameters receive gradients (``autograd.grad`` w.r.t. them). One adversary update per
agent update; its parameters and Adam state are re-initialised every ``reset_every`` env steps so
that it keeps tracking a moving agent instead of settling in a stale optimum.

``log nu_psi`` is measured in the squashed coordinates ``u = tanh(z)`` in [-1, 1]^D; the change to
õ-coordinates adds the constant ``D log eps``, which changes no gradient. The optional target term
``lambda * KL(nu || p)`` (``kl_in_target``; the paper does not say whether it used it) is, per
sample, ``lambda * (log nu(u) + D log 2)`` (``p`` is uniform, density 2^-D on the u-cube).

lambda is constant, or annealed from ``temperature_start`` to ``temperature`` by ``ramp_end``
geometrically (log-linear: 1000 -> 4 spends as many steps on each factor of lambda; the paper
does not give the shape of its annealing).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from robustrl.adversaries import Adversary, Mixture, linear_ramp, set_value
from robustrl.nets import SquashedGaussianActor


class SoftWorstAdversary(Adversary):
    """``nu_psi``: a squashed-Gaussian network over the ball, trained by the KL objective."""

    metric_names = ("adversary_loss", "adversary_temperature")

    def __init__(
        self,
        obs_dim: int,
        eps: float,
        hidden_sizes: list[int],
        lr: float = 3e-4,
        temperature: float = 2.0,
        temperature_start: float | None = None,
        ramp_end: int = 0,
        reset_every: int = 2000,
        behaviour_ratio: float = 0.5,
        kl_in_target: bool = False,
        in_target: bool = True,
        in_actor: bool = True,
    ):
        super().__init__(in_target, in_actor)
        self.eps, self.obs_dim = eps, obs_dim
        self.net = SquashedGaussianActor(obs_dim, obs_dim, list(hidden_sizes))
        self.lr, self.reset_every = lr, reset_every
        self.final_temperature, self.temperature_start = temperature, temperature_start
        self.ramp_end, self.behaviour_ratio, self.kl_in_target = (
            ramp_end,
            behaviour_ratio,
            kl_in_target,
        )
        start = temperature if temperature_start is None else temperature_start
        self.register_buffer("temperature", torch.tensor(float(start)), persistent=False)
        self.optim = torch.optim.Adam(self.net.parameters(), lr=lr)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optim": self.optim}

    # ------------------------------------------------------------------ schedules

    def on_step(self, step: int, total_steps: int) -> None:
        if self.temperature_start is not None:
            fraction = linear_ramp(step, 0, self.ramp_end)
            log_t = (1 - fraction) * math.log(self.temperature_start) + fraction * math.log(
                self.final_temperature
            )
            set_value(self.temperature, math.exp(log_t))
        if step > 0 and step % self.reset_every == 0:
            self.reset()

    def reset(self) -> None:
        """Fresh weights and a fresh Adam state."""
        for module in self.net.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()
        self.optim.state.clear()

    # ------------------------------------------------------------------ the adversary

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``õ ~ nu_psi(.|o)`` (B, obs_dim), reparameterised, and ``log nu_psi(u|o)`` (B,)."""
        u, log_prob = self.net.sample(obs)
        return obs + self.eps * u, log_prob

    @torch.no_grad()
    def behaviour(self, obs: torch.Tensor) -> torch.Tensor:
        perturbed = torch.rand(obs.shape[0], 1, device=obs.device) < self.behaviour_ratio
        return torch.where(perturbed, self.sample(obs)[0], obs)

    @torch.no_grad()
    def target(self, next_obs: torch.Tensor, agent) -> Mixture:
        adv, log_prob = self.sample(next_obs)
        bonus = None
        if self.kl_in_target:
            bonus = self.temperature * (log_prob + self.obs_dim * math.log(2.0))
        return Mixture(adv.unsqueeze(0), next_obs.new_ones(1), bonus)

    def actor(self, obs: torch.Tensor, agent) -> Mixture:
        with torch.no_grad():
            adv = self.sample(obs)[0]
        return Mixture.point(adv)

    def learn(self, batch: dict[str, torch.Tensor], agent) -> torch.Tensor:
        """One step on ``L_nu = E[V(o, õ) + lambda log nu_psi(õ|o)]``; returns (loss, lambda)."""
        obs = batch["obs"]
        params = list(self.net.parameters())
        with torch.enable_grad():
            adv, log_prob = self.sample(obs)
            loss = (agent.soft_value(obs, adv) + self.temperature * log_prob).mean()
            grads = torch.autograd.grad(loss, params)
        for param, grad in zip(params, grads):
            param.grad = grad
        self.optim.step()
        return torch.stack([loss.detach(), self.temperature.clone()])
