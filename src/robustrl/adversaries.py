"""Training-time adversaries and policy regularisers: the hooks robust methods plug into SAC.

An observation-robust method is *SAC plus an adversary* used at three places (ALGORITHMS.md §3):

- (B) ``behaviour(obs)``: the observation the behaviour policy sees while collecting data;
- (E) ``target(next_obs, agent)``: the observations the policy sees in the critic target;
- (I) ``actor(obs, agent)``: the observations the policy sees in the actor loss;

plus (L) ``learn(batch, agent)`` for adversaries that train, and an optional *regulariser* whose
value is added to the actor loss. Critics always see the true observation. All observations are
normalised, float32, shape (B, obs_dim).

(E) and (I) return a ``Mixture``: K candidate observations per row with weights, so that an
adversary that is a mixture (VALT-EPS: ``kappa * delta(õ*) + (1 - kappa) * Uniform``) gives SAC the
exact expectation ``sum_k w_k V(o, õ_k)`` and SAC evaluates all K points in one batched pass.

Schedules (eps growing with training, kappa 0 -> 1) are functions of the environment step set by
``on_step``, which the training loop calls before every step; a resumed run therefore continues
the schedule exactly. ``attach`` gives adversaries that need environment access (SAC-PPO's PPO
adversary collects its own data) the training context.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

if TYPE_CHECKING:
    import gymnasium as gym

    from robustrl.algos.sac import SAC
    from robustrl.envs import RunningNormalizer


class Mixture(NamedTuple):
    """A distribution over observations per row: ``points`` (K, B, D) with ``weights`` (K,).

    ``bonus`` (B,), when given, is added to the expectation of the critic target (VALT-SOFT's
    optional ``lambda * KL(nu || p)`` term).
    """

    points: torch.Tensor
    weights: torch.Tensor
    bonus: torch.Tensor | None = None

    @staticmethod
    def point(obs: torch.Tensor) -> Mixture:
        """The distribution that puts all its mass on ``obs``."""
        return Mixture(obs.unsqueeze(0), obs.new_ones(1))

    def flat(self) -> torch.Tensor:
        """All points as one batch (K * B, D), for a single network pass."""
        return self.points.reshape(-1, self.points.shape[-1])

    def tile(self, obs: torch.Tensor) -> torch.Tensor:
        """``obs`` (B, D) repeated for each of the K points, (K * B, D): the critic's input."""
        return obs.repeat(self.points.shape[0], 1)

    def expect(self, values: torch.Tensor) -> torch.Tensor:
        """``sum_k w_k values_k`` for per-point values (K * B,) -> (B,)."""
        return self.weights @ values.reshape(self.points.shape[0], -1)


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return -grad


def reverse_gradient(x: torch.Tensor) -> torch.Tensor:
    """Identity whose gradient is negated: a player upstream of ``x`` ascends the loss that the
    player downstream descends (a min-max game in one backward pass)."""
    return _ReverseGradient.apply(x)


def linear_ramp(step: int, start: int, end: int) -> float:
    """0 before ``start``, 1 from ``end`` on, linear in between."""
    if step >= end:
        return 1.0
    if step <= start:
        return 0.0
    return (step - start) / (end - start)


def uniform_in_ball(obs: torch.Tensor, eps: torch.Tensor | float) -> torch.Tensor:
    """One uniform sample from ``B_eps(obs)`` per row."""
    return obs + (2.0 * torch.rand_like(obs) - 1.0) * eps


def project(obs: torch.Tensor, adv: torch.Tensor, eps: torch.Tensor | float) -> torch.Tensor:
    """The closest point of ``B_eps(obs)`` to ``adv`` (L-inf projection)."""
    eps = torch.as_tensor(eps, dtype=obs.dtype, device=obs.device)
    return obs + torch.maximum(torch.minimum(adv - obs, eps), -eps)


@functools.cache
def _cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (x86 AVX512-BF16 or AMX; Linux flags)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bfloat16`` where the hardware has native bfloat16 matmuls, else ``float32``."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if device.type == "cpu" and _cpu_has_bf16() else "float32"


def inner_autocast(precision: str, device: torch.device):
    """The autocast context of the inner maximisation passes (PGD, SGLD).

    Their result only uses the *sign* of an input gradient, which bfloat16 arithmetic gets right
    for the vast majority of coordinates (97.6% of PGD's perturbation signs agreed with float32 on
    a HalfCheetah-sized agent) at a third of the cost on a CPU with native bfloat16
    (docs/BENCHMARKS.md). Iterates, projections and every loss stay float32.
    """
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


@dataclass
class TrainingContext:
    """What the training loop shares with an adversary that collects its own data (SAC-PPO)."""

    make_env: Callable[[], gym.Env]
    normalizer: RunningNormalizer
    total_steps: int
    seed: int


class Adversary(nn.Module):
    """The clean adversary: perturbs nothing. Subclasses override the hooks they need.

    ``in_target`` / ``in_actor`` switch the adversary off in (E) / (I) (the paper's "w/o PE" and
    "w/o PI" ablations, Table 8); SAC then uses the clean observation there. ``metric_names``
    name the values ``learn`` returns, logged with SAC's metrics.
    """

    metric_names: tuple[str, ...] = ()

    def __init__(self, in_target: bool = True, in_actor: bool = True):
        super().__init__()
        self.in_target, self.in_actor = in_target, in_actor

    def behaviour(self, obs: torch.Tensor) -> torch.Tensor:
        """(B) observation used to choose the collected action."""
        return obs

    def target(self, next_obs: torch.Tensor, agent: SAC) -> Mixture:
        """(E) observations given to the policy in the critic target ``E V(o', õ')``."""
        return Mixture.point(next_obs)

    def actor(self, obs: torch.Tensor, agent: SAC) -> Mixture:
        """(I) observations given to the policy in the actor loss."""
        return Mixture.point(obs)

    def observations(
        self, obs: torch.Tensor, next_obs: torch.Tensor, agent: SAC
    ) -> tuple[Mixture, Mixture]:
        """What the policy sees in one update: (E) for ``next_obs`` and (I) for ``obs``.

        Both are computed with the weights before the update, so an adversary may compute them
        together (VALT-EPS runs one PGD over both batches). In the sequential update order the
        actor loss then evaluates these points with the critic updated on this batch: a search
        for the worst point with a one-step-older critic, a documented choice that halves the
        passes. ``in_target`` / ``in_actor`` give the clean observation instead.
        """
        target = self.target(next_obs, agent) if self.in_target else Mixture.point(next_obs)
        actor = self.actor(obs, agent) if self.in_actor else Mixture.point(obs)
        return target, actor

    def loss(self) -> torch.Tensor | None:
        """A term of the adversary's own objective that SAC adds to its total loss, so that one
        backward pass also gives the adversary its gradients (which must reach only the
        adversary's parameters); ``learn`` then steps its optimiser. None: no such term."""
        return None

    def learn(self, batch: dict[str, torch.Tensor], agent: SAC) -> torch.Tensor | None:
        """(L) one learning step of the adversary itself, after SAC's; returns its metrics
        (len(metric_names))."""
        return None

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The adversary's optimisers by name (checkpointed with the agent's)."""
        return {}

    def on_step(self, step: int, total_steps: int) -> None:
        """Called by the training loop before every environment step (for schedules)."""

    def attach(self, agent: SAC, context: TrainingContext) -> None:
        """Called once by the training loop before the first step."""


class Regulariser(nn.Module):
    """A term added to the actor loss. The base class adds nothing."""

    active = False  # whether forward can be non-zero (a metric column is logged when it is)

    def forward(self, obs: torch.Tensor, agent: SAC) -> torch.Tensor:
        return obs.new_zeros(())

    def on_step(self, step: int, total_steps: int) -> None:
        """Called by the training loop before every environment step (for schedules)."""


def set_value(tensor: torch.Tensor, value: Any) -> None:
    """Write a schedule value into a buffer in place (no new tensor, nothing recompiles)."""
    tensor.fill_(float(value))
