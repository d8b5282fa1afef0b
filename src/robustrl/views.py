"""Policy views: what an attack sees of an agent, whatever library trained it.

A view works in the agent's normalised observation space (``o``, float32 tensors (B, obs_dim))
and normalised action space [-1, 1]^act_dim. It exposes the agent's own frozen normaliser so an
attack's budget is measured in the agent's units, a differentiable ``mean_action`` and
``distribution``, ``act``, and, where the agent has them, ``q_value`` (SAC/TD3 critics) and
``state_value`` (PPO). ``robustrl.views.load_view`` opens a robustrl run directory; the
Stable-Baselines3 adapter lives in ``robustrl.sb3``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
from torch.distributions import Normal

from robustrl.errors import ConfigError
from robustrl.nets import DeterministicActor

# std of the Gaussian a view of a deterministic (TD3) actor reports; the same convention as the
# Stable-Baselines3 TD3 view (``robustrl.sb3.TD3_DISTRIBUTION_STD``): see RobustRLView.distribution.
DETERMINISTIC_STD = 0.1


class PolicyView(ABC):
    """Base class: subclasses set the attributes and implement the abstract methods."""

    obs_dim: int
    act_dim: int
    env_id: str
    action_low: np.ndarray  # env units
    action_high: np.ndarray
    has_q_value = False
    has_oa_q_value = False  # an optimal-adversary-aware action critic (OA-TD3)
    has_state_value = False
    kind = "agent"  # e.g. "robustrl sac", "sb3 ppo"

    @abstractmethod
    def normalize(self, raw_obs: np.ndarray) -> np.ndarray:
        """Raw env observations (B, obs_dim) -> the agent's normalised observations, float32."""

    @property
    def obs_std(self) -> np.ndarray:
        """Std of the normaliser (raw units per normalised unit), for raw-unit budgets."""
        return np.ones(self.obs_dim)

    @abstractmethod
    def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic action in [-1, 1], (B, act_dim); differentiable in ``obs``."""

    @abstractmethod
    def distribution(self, obs: torch.Tensor) -> Normal:
        """The Gaussian the agent samples from (pre-squash for SAC), batch shape (B, act_dim)."""

    @abstractmethod
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Action in [-1, 1] for normalised observations, (B, act_dim)."""

    def q_value(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Mean critic value (B,) of ``action`` at ``obs``; only where ``has_q_value``."""
        raise ConfigError(f"{self.kind} has no Q critic")

    def oa_q_value(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Mean OA critic value (B,) of ``action`` at ``obs``; only where ``has_oa_q_value``."""
        raise ConfigError(f"{self.kind} has no OA critic")

    def state_value(self, obs: torch.Tensor) -> torch.Tensor:
        """State value (B,); only where ``has_state_value``."""
        raise ConfigError(f"{self.kind} has no state-value critic")

    def to_env(self, action: np.ndarray) -> np.ndarray:
        """Actions in [-1, 1] -> env units."""
        action = np.clip(action, -1.0, 1.0)
        return self.action_low + (action + 1.0) * 0.5 * (self.action_high - self.action_low)


class RobustRLView(PolicyView):
    """View of a robustrl SAC, TD3 or OA-TD3 agent (run directory).

    TD3's actor is deterministic: ``distribution`` is a Normal centred on its action with the
    fixed std ``DETERMINISTIC_STD`` and ``act`` ignores ``deterministic`` (no exploration noise
    at evaluation). ``q_value`` is the mean of the two nominal critics; OA-TD3 also has
    ``oa_q_value``, the mean of its two OA critics.
    """

    has_q_value = True

    def __init__(self, policy):
        self.policy = policy
        agent = policy.agent
        agent.requires_grad_(False)  # attacks differentiate w.r.t. observations only
        self.actor, self.critic = agent.actor, agent.critic
        self.obs_dim, self.act_dim = agent.obs_dim, agent.act_dim
        self.env_id = policy.config.env
        self.env_kwargs = dict(policy.config.env_kwargs)
        self.action_low, self.action_high = policy.action_low, policy.action_high
        self.kind = f"robustrl {policy.config.algo}"
        self.device = agent.device
        self.deterministic_actor = isinstance(self.actor, DeterministicActor)  # TD3, OA-TD3
        self.has_oa_q_value = hasattr(agent, "oa_critic")

    def normalize(self, raw_obs: np.ndarray) -> np.ndarray:
        return self.policy.normalizer.normalize(raw_obs)

    @property
    def obs_std(self) -> np.ndarray:
        return self.policy.normalizer.std

    def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor.mean_action(obs)

    def distribution(self, obs: torch.Tensor) -> Normal:
        """SAC: the pre-squash Gaussian. TD3: ``Normal(pi(o), DETERMINISTIC_STD)``, a convention
        (not part of the agent) under which the KL between two observations' distributions is
        ``|pi(o) - pi(o')|^2 / (2 std^2)``: MAD then maximises the squared action change."""
        if self.deterministic_actor:
            action = self.actor.mean_action(obs)
            return Normal(action, torch.full_like(action, DETERMINISTIC_STD))
        mu, log_std = self.actor.gaussian(obs)
        return Normal(mu, log_std.exp())

    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        with torch.no_grad():
            if deterministic or self.deterministic_actor:
                return self.actor.mean_action(obs)
            return self.actor.sample(obs)[0]

    def q_value(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.critic(obs, action).mean(0)

    def oa_q_value(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        if not self.has_oa_q_value:
            return super().oa_q_value(obs, action)
        return self.policy.agent.oa_q_value(obs, action)


def load_view(run_dir: str | Path, device: str = "cpu") -> RobustRLView:
    """The view of a robustrl run directory's newest checkpoint."""
    from robustrl.policy import load

    return RobustRLView(load(run_dir, device=device))
