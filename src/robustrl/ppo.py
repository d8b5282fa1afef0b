"""Proximal Policy Optimization for continuous actions, written once for every PPO user here.

Clipped surrogate objective of Schulman et al. 2017 ("Proximal Policy Optimization Algorithms",
Eq. 7) with generalised advantage estimation (Schulman et al. 2016, "High-Dimensional Continuous
Control Using Generalized Advantage Estimation", Eq. 16), a separate value network with its own
Adam optimiser, and an entropy bonus. Configured by ``robustrl.config.PPOConfig``.

Conventions
    The policy is a diagonal Gaussian ``N(mu(o), exp(log_std))``: an MLP mean and a
    state-independent, learnable log-std initialised to ``init_log_std``. The *raw* Gaussian sample
    is what PPO optimises (its log-probability enters the ratio); a caller squashes or clips it as
    it needs (SAC-PPO's adversary uses ``hardtanh``), outside PPO. Observations are whatever the
    caller feeds (normalised ones, usually). Tensors are float32.

    One rollout is a sequence of single-environment transitions. Each transition keeps the
    observation *reached* (``next_obs``, the final observation before any reset), so the value of
    a time-limit truncation is bootstrapped, while a termination is not (``compute_gae``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Normal

from robustrl.config import PPOConfig
from robustrl.nets import mlp


class GaussianPolicy(nn.Module):
    """``N(mu(o), exp(log_std))`` with an MLP mean and a state-independent log-std."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], init_log_std: float = 0.0):
        super().__init__()
        self.mean = mlp(obs_dim, hidden, act_dim)
        # A near-zero initial mean (output layer scaled by 0.01) starts every action dimension
        # from the same unbiased, exploratory distribution (Andrychowicz et al. 2021, "What
        # matters in on-policy RL").
        with torch.no_grad():
            self.mean[-1].weight.mul_(0.01)
            self.mean[-1].bias.zero_()
        self.log_std = nn.Parameter(torch.full((act_dim,), float(init_log_std)))

    def distribution(self, obs: torch.Tensor) -> Normal:
        mu = self.mean(obs)
        # no argument validation: it would read a value back from the device at every call
        return Normal(mu, self.log_std.exp().expand_as(mu), validate_args=False)


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    done: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and value targets (returns) for one rollout, each (T,).

    ``values[t] = V(o_t)`` and ``next_values[t] = V(o_{t+1})``, where ``o_{t+1}`` is the
    observation step t reached (before any reset). ``terminated[t]``: the episode ended in a
    terminal state, so nothing is bootstrapped; ``done[t]``: the episode ended at t for any reason
    (termination or time-limit truncation), so the recursion stops there. A truncation therefore
    bootstraps from ``V(o_{t+1})`` of the final observation; so does the last step of the rollout,
    which is cut wherever the rollout ends:

        delta_t = r_t + gamma (1 - terminated_t) V(o_{t+1}) - V(o_t)
        A_t     = delta_t + gamma lam (1 - done_t) A_{t+1},     A_T = 0
        R_t     = A_t + V(o_t)

    The recursion runs on Python floats (one copy from the device, not T small kernels).
    """
    deltas = (rewards + gamma * (1.0 - terminated.float()) * next_values - values).tolist()
    decays = (gamma * lam * (1.0 - done.float())).tolist()
    advantages, running = [0.0] * len(deltas), 0.0
    for t in reversed(range(len(deltas))):
        running = deltas[t] + decays[t] * running
        advantages[t] = running
    advantages = torch.tensor(advantages, dtype=rewards.dtype, device=rewards.device)
    return advantages, advantages + values


class Rollout:
    """A fixed-size buffer of single-environment transitions, filled by ``add``."""

    def __init__(self, size: int, obs_dim: int, act_dim: int, device: torch.device | str = "cpu"):
        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(size, *shape, device=device)

        self.size, self.count = size, 0
        self.obs, self.next_obs = zeros(obs_dim), zeros(obs_dim)
        self.actions = zeros(act_dim)
        self.log_probs, self.values, self.rewards = zeros(), zeros(), zeros()
        self.terminated, self.done = zeros(), zeros()

    def __len__(self) -> int:
        return self.count

    @property
    def full(self) -> bool:
        return self.count == self.size

    def add(self, obs, action, log_prob, value, reward, next_obs, terminated, truncated) -> None:
        """One transition: ``obs``/``next_obs`` (obs_dim,), ``action`` (act_dim,), the rest scalars."""
        if self.full:
            raise RuntimeError(f"rollout is full ({self.size} transitions)")
        t = self.count
        self.obs[t] = torch.as_tensor(obs)
        self.next_obs[t] = torch.as_tensor(next_obs)
        self.actions[t] = torch.as_tensor(action)
        self.log_probs[t], self.values[t] = float(log_prob), float(value)
        self.rewards[t] = float(reward)
        self.terminated[t] = float(terminated)
        self.done[t] = float(terminated or truncated)
        self.count += 1


class PPO(nn.Module):
    """A Gaussian policy and a value network trained by the clipped PPO objective."""

    def __init__(self, obs_dim: int, act_dim: int, config: PPOConfig):
        super().__init__()
        self.obs_dim, self.act_dim, self.config = obs_dim, act_dim, config
        hidden = list(config.hidden_sizes)
        self.policy = GaussianPolicy(obs_dim, act_dim, hidden, config.init_log_std)
        self.value = mlp(obs_dim, hidden, 1)
        self.policy_optim = torch.optim.Adam(self.policy.parameters(), lr=config.lr)
        self.value_optim = torch.optim.Adam(self.value.parameters(), lr=config.value_lr)

    def state_value(self, obs: torch.Tensor) -> torch.Tensor:
        """``V(o)``, (B,)."""
        return self.value(obs).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A raw Gaussian sample (B, act_dim), its log-probability (B,) and ``V(o)`` (B,)."""
        dist = self.policy.distribution(obs)
        action = dist.sample()
        return action, dist.log_prob(action).sum(-1), self.state_value(obs)

    def update(self, rollout: Rollout) -> dict[str, float]:
        """``epochs`` passes over shuffled minibatches of ``rollout``; returns mean metrics.

        Policy loss (PPO Eq. 7 plus an entropy bonus), advantages normalised per minibatch:

            L = -E[ min(rho A, clip(rho, 1 - c, 1 + c) A) ] - entropy_coef * E[H(pi(.|o))]

        with ``rho = pi(a|o) / pi_old(a|o)``. Value loss: ``E[(V(o) - R)^2]`` against the GAE
        returns. Each network has its own Adam and its gradient norm clipped to ``max_grad_norm``.
        ``ratio_min`` / ``ratio_max`` are the extremes of rho over every minibatch, before its step.
        """
        cfg = self.config
        n = len(rollout)
        if n == 0:
            raise ValueError("PPO.update needs a rollout with at least one transition")
        obs, actions = rollout.obs[:n], rollout.actions[:n]
        old_log_probs, values = rollout.log_probs[:n], rollout.values[:n]
        with torch.no_grad():
            next_values = self.state_value(rollout.next_obs[:n])
        advantages, returns = compute_gae(
            rollout.rewards[:n],
            values,
            next_values,
            rollout.terminated[:n],
            rollout.done[:n],
            cfg.gamma,
            cfg.gae_lambda,
        )
        # Metrics stay on the device until the end: one read-back per update, not per minibatch.
        sums, batches = obs.new_zeros(4), 0
        ratio_min, ratio_max = obs.new_tensor(float("inf")), obs.new_tensor(0.0)
        for _ in range(cfg.epochs):
            for index in torch.randperm(n, device=obs.device).split(cfg.minibatch_size):
                adv = advantages[index]
                adv = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-8)
                dist = self.policy.distribution(obs[index])
                ratio = (dist.log_prob(actions[index]).sum(-1) - old_log_probs[index]).exp()
                clipped = ratio.clamp(1.0 - cfg.clip, 1.0 + cfg.clip)
                entropy = dist.entropy().sum(-1).mean()
                policy_loss = -torch.min(ratio * adv, clipped * adv).mean()
                self._step(self.policy_optim, policy_loss - cfg.entropy_coef * entropy)

                value_loss = (self.state_value(obs[index]) - returns[index]).pow(2).mean()
                self._step(self.value_optim, value_loss)

                clip_fraction = ((ratio - 1.0).abs() > cfg.clip).float().mean()
                sums += torch.stack([policy_loss, value_loss, entropy, clip_fraction]).detach()
                ratio_min = torch.minimum(ratio_min, ratio.detach().min())
                ratio_max = torch.maximum(ratio_max, ratio.detach().max())
                batches += 1
        with torch.no_grad():  # KL(old || new) estimate on the whole rollout, after the update
            log_ratio = self.policy.distribution(obs).log_prob(actions).sum(-1) - old_log_probs
            approx_kl = (log_ratio.exp() - 1.0 - log_ratio).mean()
        means = (sums / batches).tolist()
        extremes = torch.stack([approx_kl, ratio_min, ratio_max]).tolist()
        names = ("policy_loss", "value_loss", "entropy", "clip_fraction")
        return dict(zip(names + ("approx_kl", "ratio_min", "ratio_max"), means + extremes))

    def _step(self, optim: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        optim.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for group in optim.param_groups for p in group["params"]]
        nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        optim.step()
