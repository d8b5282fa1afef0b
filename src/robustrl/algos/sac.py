"""Soft Actor-Critic, the base of every off-policy method here (ALGORITHMS.md §2-3).

Twin critics with clipped double-Q and a Huber loss, automatic temperature, squashed-Gaussian
actor, Polyak-averaged target critics. One gradient update is one function (``_update``), compiled
with ``torch.compile`` when asked. Update order (``sac.update_order``):

- ``sequential`` (default, the reference order of Haarnoja et al. 2018, SB3 and CleanRL): the
  critic loss is differentiated and the critic steps; the actor loss is then evaluated with the
  *updated* critic, and the actor, temperature (and adversary) losses share a second backward.
- ``fused``: every loss in one backward pass, so the actor follows the critic as it was before
  this step's update; one backward fewer per step (docs/BENCHMARKS.md).

Either way each optimiser receives only the gradients of its own loss (the actor loss sees the
critic's weights detached), fused Adam steps and a fused Polyak update follow, and no value
leaves the tensor world inside the step (no ``.item()``).

The robust methods plug in through ``adversary`` (observations the policy sees at (B) behaviour,
(E) critic target, (I) actor loss) and ``regulariser`` (a term added to the actor loss); see
``robustrl.adversaries``. SAC itself uses the clean adversary and no regulariser.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robustrl.adversaries import Adversary, Mixture, Regulariser, TrainingContext
from robustrl.config import SACConfig
from robustrl.nets import SquashedGaussianActor, TwinQ

METRICS = ("critic_loss", "actor_loss", "alpha_loss", "alpha", "entropy", "q_mean", "target_q")


class SAC(nn.Module):
    """SAC agent on normalised observations and actions in [-1, 1]^act_dim."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        config: SACConfig,
        adversary: Adversary | None = None,
        regulariser: Regulariser | None = None,
        compile: bool = False,
        device: str = "cpu",
    ):
        super().__init__()
        self.obs_dim, self.act_dim, self.config = obs_dim, act_dim, config
        self.batch_size = config.batch_size
        hidden = list(config.hidden_sizes)
        self.actor = SquashedGaussianActor(
            obs_dim, act_dim, hidden, config.log_std_min, config.log_std_max
        )
        self.critic = TwinQ(obs_dim, act_dim, hidden)
        self.critic_target = TwinQ(obs_dim, act_dim, hidden)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(float(np.log(config.init_alpha))))
        entropy = -float(act_dim) if config.target_entropy is None else config.target_entropy
        self.register_buffer("target_entropy", torch.tensor(entropy))
        self.adversary = adversary if adversary is not None else Adversary()
        self.regulariser = regulariser if regulariser is not None else Regulariser()
        self.metric_names = (
            METRICS
            + (("reg_loss",) if self.regulariser.active else ())
            + tuple(self.adversary.metric_names)
        )
        self.to(device)
        self.device = torch.device(device)

        def adam(params, lr):
            # fused Adam: one kernel over all parameters of a network
            return torch.optim.Adam(params, lr=lr, fused=True)

        self.actor_optim = adam(self.actor.parameters(), config.actor_lr)
        self.critic_optim = adam(self.critic.parameters(), config.critic_lr)
        self.alpha_optim = adam([self.log_alpha], config.alpha_lr)
        self._online = list(self.critic.parameters())
        self._target = list(self.critic_target.parameters())
        self.compiled = compile
        self.compile_seconds = 0.0
        if compile:
            # Draw noise with the eager RNG so compiled and eager runs give the same numbers.
            from torch._inductor import config as inductor_config

            inductor_config.fallback_random = True
        self._step_fn = torch.compile(self._update) if compile else self._update

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimiser by name (checkpointed and restored by the training loop)."""
        adversary = {f"adversary.{k}": v for k, v in self.adversary.optimizers().items()}
        return {
            "actor_optim": self.actor_optim,
            "critic_optim": self.critic_optim,
            "alpha_optim": self.alpha_optim,
            **adversary,
        }

    def on_step(self, step: int, total_steps: int) -> None:
        """Advance the adversary's and the regulariser's schedules to environment step ``step``."""
        self.adversary.on_step(step, total_steps)
        self.regulariser.on_step(step, total_steps)

    def attach(self, context: TrainingContext) -> None:
        self.adversary.attach(self, context)

    # ------------------------------------------------------------------ acting

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Action in [-1, 1] for normalised ``obs`` (B, obs_dim): the policy alone, no adversary."""
        if deterministic:
            return self.actor.mean_action(obs)
        return self.actor.sample(obs)[0]

    @torch.no_grad()
    def explore(self, obs: torch.Tensor) -> torch.Tensor:
        """The behaviour policy that collects training data: a sample on the (B) observation."""
        return self.actor.sample(self.adversary.behaviour(obs))[0]

    # ------------------------------------------------------------------ learning

    def soft_value(self, obs: torch.Tensor, policy_obs: torch.Tensor) -> torch.Tensor:
        """``V(o, õ) = E_{a~pi(.|õ)}[min_i Qbar_i(o, a) - alpha log pi(a|õ)]``, one sample, (B,)."""
        action, log_prob = self.actor.sample(policy_obs)
        q_next = self.critic_target(obs, action).min(0).values
        return q_next - self.log_alpha.exp().detach() * log_prob

    def expected_soft_value(self, obs: torch.Tensor, mixture: Mixture) -> torch.Tensor:
        """``E_{õ ~ mixture} V(o, õ)`` (+ the mixture's bonus), all points in one pass, (B,)."""
        value = mixture.expect(self.soft_value(mixture.tile(obs), mixture.flat()))
        return value if mixture.bonus is None else value + mixture.bonus

    def critic_loss(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
        weight: torch.Tensor,
        seen_next: Mixture,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The critic loss (scalar), Q (2, B) and the target (B,); only the critic has a graph.

        (E) policy evaluation: ``y = r + gamma (1 - d) E_{õ'~nu(.|o')} V(o', õ')`` (ALGORITHMS.md
        §3), then a Huber loss, importance-weighted for prioritised replay, summed over the twins.
        """
        with torch.no_grad():
            target_v = self.expected_soft_value(next_obs, seen_next)
            target_q = reward + self.config.gamma * (1.0 - terminated) * target_v
        q = self.critic(obs, action)  # (2, B)
        huber = F.huber_loss(
            q, target_q.expand_as(q), reduction="none", delta=self.config.huber_delta
        )
        return (huber * weight).mean(1).sum(), q, target_q

    def actor_losses(
        self, obs: torch.Tensor, seen: Mixture
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The actor loss (with the regulariser), the temperature loss, the regulariser's value
        and the policy's log-probability (B,).

        (I) policy improvement, ``E_{õ~nu(.|o)} E_{a~pi(.|õ)} [alpha log pi(a|õ) - min_i Q_i(o, a)]``:
        the policy acts on õ, the critic sees the TRUE observation o with its weights detached
        (the actor loss gives the critic no gradient); the temperature loss sees the
        log-probability detached (it gives the actor none).
        """
        alpha = self.log_alpha.exp().detach()
        new_action, log_prob = self.actor.sample(seen.flat())
        q_pi = self.critic(seen.tile(obs), new_action, detach=True).min(0).values
        log_prob = seen.expect(log_prob)
        reg_loss = self.regulariser(obs, self)
        actor_loss = (alpha * log_prob - seen.expect(q_pi)).mean() + reg_loss
        # Temperature: match the policy's entropy to the target entropy.
        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        return actor_loss, alpha_loss, reg_loss, log_prob

    def _update(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
        weight: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        alpha = self.log_alpha.exp().detach()
        # What the policy sees: (E) õ' ~ nu(.|o') in the target, (I) õ ~ nu(.|o) in the actor loss.
        seen_next, seen = self.adversary.observations(obs, next_obs, self)
        critic_loss, q, target_q = self.critic_loss(
            obs, action, reward, next_obs, terminated, weight, seen_next
        )
        sequential = cfg.update_order == "sequential"
        self.critic_optim.zero_grad(set_to_none=True)
        if sequential:
            # Reference order (Haarnoja et al. 2018; SB3, CleanRL): the critic steps first, so
            # the actor loss below is evaluated with the critic updated on this batch.
            critic_loss.backward()
            self.critic_optim.step()
        actor_loss, alpha_loss, reg_loss, log_prob = self.actor_losses(obs, seen)

        # The actor, temperature and adversary losses share one backward pass; each reaches only
        # its own parameters (``actor_losses``; the adversary's own term touches only the
        # adversary). In the fused order the critic loss joins them.
        total = actor_loss
        adversary_loss = self.adversary.loss()
        if adversary_loss is not None:
            total = total + adversary_loss
        if cfg.autotune_alpha:
            total = total + alpha_loss
        if not sequential:
            total = total + critic_loss
        self.actor_optim.zero_grad(set_to_none=True)
        self.alpha_optim.zero_grad(set_to_none=True)
        total.backward()
        if not sequential:
            self.critic_optim.step()
        self.actor_optim.step()
        if cfg.autotune_alpha:
            self.alpha_optim.step()
        with torch.no_grad():
            torch._foreach_lerp_(self._target, self._online, cfg.tau)

        metrics = [
            critic_loss.detach(),
            actor_loss.detach(),
            alpha_loss.detach(),
            alpha,
            -log_prob.detach().mean(),
            q.detach().mean(),
            target_q.mean(),
        ]
        if self.regulariser.active:
            metrics.append(reg_loss.detach())
        return torch.stack(metrics), (q.detach() - target_q).abs().mean(0)

    def update(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One gradient step on a batch of normalised transitions.

        ``batch`` holds ``obs`` (B, obs_dim), ``action`` (B, act_dim), ``reward`` (B,),
        ``next_obs`` (B, obs_dim), ``terminated`` (B,) and ``weight`` (B,) importance weights.
        Returns the metrics vector (len(METRICS),) and |TD error| (B,) for new priorities.
        """
        start = time.perf_counter() if self.compiled and self.compile_seconds == 0.0 else None
        out = self._step_fn(
            batch["obs"],
            batch["action"],
            batch["reward"],
            batch["next_obs"],
            batch["terminated"],
            batch["weight"],
        )
        adversary_metrics = self.adversary.learn(batch, self)
        if start is not None:  # the first call of a compiled step includes compilation
            self.compile_seconds = time.perf_counter() - start
        if adversary_metrics is not None:
            out = (torch.cat([out[0], adversary_metrics.detach()]), out[1])
        return out
