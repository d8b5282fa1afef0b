"""VALT-SOFT: a learned soft-worst adversary (paper Lemma 4.7, Eq. 10 and 57, App. C.2).

With a KL soft constraint and a uniform prior ``p`` on the ball, the soft-worst adversary is

    nu*(õ | o) = p(õ | o) exp(-V(o, õ) / lambda) / Z(o)

A network ``nu_psi`` (the policy's architecture, output dimension = observation dimension) with
``õ = o + eps * tanh(z)``, ``z ~ N(m_psi(o), s_psi(o))``, approximates it by minimising
``KL(nu_psi || nu*)``, which up to a constant is (ALGORITHMS.md §3)

    L_nu = E_o E_{õ ~ nu_psi(.|o)} [ V(o, õ) + lambda log nu_psi(õ | o) ]

a reparameterised SAC-actor loss that *minimises* the agent's soft value with temperature lambda.

One pass for both players (the update-cost target of issue 4). SAC's actor loss is
``E_{õ~nu} E_{a~pi(.|õ)}[alpha log pi(a|õ) - min_i Q_i(o, a)] = -E_{õ~nu} V(o, õ)`` with ``V``
evaluated by the *online* critics at the TRUE observation. The adversary feeds its reparameterised
sample to that loss through a gradient reversal, and adds ``lambda * E log nu_psi`` to SAC's actor
backward (``loss``), so SAC's actor backward pass gives nu_psi exactly ``grad L_nu`` (and the agent
its usual gradients: the reversal only changes what flows upstream of õ); ``learn`` then steps
nu_psi's Adam. The one sample õ per row serves both the actor loss and L_nu. Documented choice:
``V`` here uses the online critics as SAC's actor loss does (after this step's critic update
in the default sequential order, before it in the fused order);
ALGORITHMS.md writes ``V`` with the target critics (its definition for the critic target) and
does not say which the adversary uses. With ``in_actor=False`` (the "w/o PI" ablation) the actor
loss does not see õ, so ``learn`` runs the same objective in a pass of its own
(``gradient_pass``). Its parameters and Adam state are re-initialised every ``reset_every`` env
steps so that it keeps tracking a moving agent instead of settling in a stale optimum.

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

from robustrl.adversaries import Adversary, Mixture, linear_ramp, reverse_gradient, set_value
from robustrl.nets import SquashedGaussianActor


class SoftWorstAdversary(Adversary):
    """``nu_psi``: a squashed-Gaussian network over the ball, trained by the KL objective."""

    metric_names = ("adversary_log_prob", "adversary_temperature")

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
        self.optim = torch.optim.Adam(self.net.parameters(), lr=lr, fused=True)
        self._log_prob: torch.Tensor | None = None  # log nu of the actor-loss samples, one update
        self._last_log_prob = torch.zeros(())

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
        """õ ~ nu_psi(.|o) for the actor loss, through a gradient reversal: SAC's actor loss is
        ``-E V(o, õ)``, so its backward pass gives nu_psi the gradient of ``E V`` (module
        docstring); ``loss`` adds the ``lambda log nu_psi`` term."""
        adv, log_prob = self.sample(obs)
        self._log_prob = log_prob
        return Mixture.point(reverse_gradient(adv))

    def loss(self) -> torch.Tensor | None:
        log_prob, self._log_prob = self._log_prob, None
        if log_prob is None:
            return None
        self._last_log_prob = log_prob.detach().mean()
        return self.temperature * log_prob.mean()

    def learn(self, batch: dict[str, torch.Tensor], agent) -> torch.Tensor:
        """One Adam step on ``L_nu``; returns (mean log nu_psi, lambda).

        With the adversary in the actor loss its gradients came with SAC's backward pass; without
        (``in_actor=False``) they are computed here by ``gradient_pass``."""
        if not self.in_actor:
            self._last_log_prob = self.gradient_pass(batch["obs"], agent)
        self.optim.step()
        self.optim.zero_grad(set_to_none=True)
        return torch.stack([self._last_log_prob, self.temperature.clone()])

    def gradient_pass(self, obs: torch.Tensor, agent) -> torch.Tensor:
        """Gradients of ``L_nu = E[V(o, õ) + lambda log nu_psi(õ|o)]`` into ``.grad`` of the
        adversary's parameters only, ``V`` from the online critics; returns mean log nu_psi."""
        params = list(self.net.parameters())
        with torch.enable_grad():
            adv, log_prob = self.sample(obs)
            action, policy_log_prob = agent.actor.sample(adv)
            q = agent.critic(obs, action, detach=True).min(0).values
            value = q - agent.log_alpha.exp().detach() * policy_log_prob
            loss = (value + self.temperature * log_prob).mean()
            grads = torch.autograd.grad(loss, params)
        for param, grad in zip(params, grads):
            param.grad = grad
        return log_prob.detach().mean()
