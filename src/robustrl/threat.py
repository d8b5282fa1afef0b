"""Threat models: the L-infinity balls every attack and every training-time adversary stays in.

Observation threat (SA-MDP, ALGORITHMS.md §1): ``õ`` in ``B_eps(o) = {õ : |õ - o|_inf <= eps}`` in
the agent's *normalised* observation space (units of the normaliser's standard deviations).
Action threat (OA-PI): the executed action is ``clip(a + delta, -1, 1)`` with ``|delta|_inf <= eps``
in the normalised action space.

Bounds are enforced with the same float32 comparisons ``contains`` uses, so a projected point is
inside the ball exactly, not up to round-off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from robustrl.errors import ConfigError

# The main paper's observation budgets (normalised units); Humanoid from earlier work.
PAPER_EPS = {"Hopper": 0.075, "Walker2d": 0.05, "HalfCheetah": 0.15, "Ant": 0.15, "Humanoid": 0.075}


def paper_eps(env_id: str) -> float | None:
    """The paper's eps for ``env_id`` (any version, e.g. Hopper-v5), or None."""
    return PAPER_EPS.get(env_id.split("-")[0].split("/")[-1])


MAX_EPS = 1e6  # no budget is this large; 1e30 only overflows the attacks' arithmetic


def check_eps(eps: float, what: str = "eps") -> float:
    if not isinstance(eps, int | float) or not math.isfinite(eps) or eps < 0:
        raise ConfigError(f"{what} must be a finite number >= 0, got {eps!r}")
    if eps > MAX_EPS:
        raise ConfigError(f"{what} must be at most {MAX_EPS:g}, got {eps!r}")
    return float(eps)


@dataclass(frozen=True)
class ObservationBall:
    """``B_eps(o)`` per observation; ``eps`` is a scalar or a per-dimension radius (obs_dim,).

    A per-dimension radius is how a raw-unit budget is expressed in normalised space:
    ``from_raw(eps_raw, std)`` gives ``eps_raw / std`` for each dimension.
    """

    eps: float | tuple[float, ...]

    def __post_init__(self) -> None:
        radii = self.eps if isinstance(self.eps, tuple) else (self.eps,)
        for r in radii:
            check_eps(r)

    @classmethod
    def from_raw(cls, eps_raw: float, std: np.ndarray) -> ObservationBall:
        """Budget given in raw observation units, converted with the agent's normaliser std."""
        check_eps(eps_raw, "raw eps")
        return cls(tuple(float(eps_raw / s) for s in np.asarray(std, np.float64)))

    def radius(self, like: torch.Tensor) -> torch.Tensor:
        """The radius as a tensor broadcastable to ``like`` (B, obs_dim)."""
        return torch.as_tensor(self.eps, dtype=like.dtype, device=like.device)

    @property
    def is_zero(self) -> bool:
        radii = self.eps if isinstance(self.eps, tuple) else (self.eps,)
        return max(radii) == 0.0

    def sample(
        self, center: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Uniform samples in the ball around each row of ``center`` (B, obs_dim)."""
        u = torch.rand(center.shape, generator=generator, dtype=center.dtype, device=center.device)
        return self.project(center, center + (2.0 * u - 1.0) * self.radius(center))

    def project(self, center: torch.Tensor, point: torch.Tensor) -> torch.Tensor:
        """The closest point of the ball to ``point`` (coordinate-wise clamp)."""
        r = self.radius(center)
        return torch.maximum(torch.minimum(point, center + r), center - r)

    def contains(self, center: torch.Tensor, point: torch.Tensor) -> bool:
        r = self.radius(center)
        return bool(((point <= center + r) & (point >= center - r)).all())


@dataclass(frozen=True)
class ActionBall:
    """Action perturbation ``delta`` with ``|delta|_inf <= eps``; executed ``clip(a + delta, -1, 1)``."""

    eps: float

    def __post_init__(self) -> None:
        check_eps(self.eps, "action eps")

    def project_delta(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.clamp(-self.eps, self.eps)

    def apply(self, action: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The executed action: inside [-1, 1] and within eps of ``action``."""
        return (action + self.project_delta(delta)).clamp(-1.0, 1.0)

    def contains(self, action: torch.Tensor, executed: torch.Tensor) -> bool:
        inside = (executed <= 1.0) & (executed >= -1.0)
        return bool((inside & ((executed - action).abs() <= self.eps + 1e-6)).all())
