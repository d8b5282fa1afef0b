"""Training-time adversaries and policy regularisers: the hooks robust methods plug into SAC.

An observation-robust method is *SAC plus an adversary* used at three places (ALGORITHMS.md §3):

- (B) ``behaviour(obs)``: the observation the behaviour policy sees while collecting data;
- (E) ``target(next_obs, agent)``: the observation the policy sees in the critic target;
- (I) ``actor(obs, agent)``: the observation the policy sees in the actor loss;

plus (L) ``learn(batch, agent)`` for adversaries that train, and an optional *regulariser* whose
value is added to the actor loss. Critics always see the true observation. All observations are
normalised, float32, shape (B, obs_dim). ``(E)`` and ``(I)`` run inside SAC's compiled update, so
they must be pure tensor code; a schedule (e.g. eps growing with training) lives in tensors that
``on_step`` updates in place, which changes values without recompiling.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from robustrl.algos.sac import SAC


class Adversary(nn.Module):
    """The clean adversary: perturbs nothing. Subclasses override the hooks they need."""

    def behaviour(self, obs: torch.Tensor) -> torch.Tensor:
        """(B) observation used to choose the collected action."""
        return obs

    def target(self, next_obs: torch.Tensor, agent: SAC) -> torch.Tensor:
        """(E) observation given to the policy in the critic target ``V(o', õ')``."""
        return next_obs

    def actor(self, obs: torch.Tensor, agent: SAC) -> torch.Tensor:
        """(I) observation given to the policy in the actor loss."""
        return obs

    def learn(self, batch: dict[str, torch.Tensor], agent: SAC) -> dict[str, Any]:
        """(L) one learning step of the adversary itself; returns metrics to log."""
        return {}

    def on_step(self, step: int, total_steps: int) -> None:
        """Called by the training loop once per environment step (for schedules)."""


class Regulariser(nn.Module):
    """A term added to the actor loss. The base class adds nothing."""

    def forward(self, obs: torch.Tensor, agent: SAC) -> torch.Tensor:
        return obs.new_zeros(())

    def on_step(self, step: int, total_steps: int) -> None:
        """Called by the training loop once per environment step (for schedules)."""
