"""The attack interface: ``perturb(o) -> õ`` inside the threat model's ball.

An attack is built from a policy view (the victim, frozen), an ``ObservationBall`` and its own
config dataclass. ``perturb`` maps a batch of normalised observations (B, obs_dim) to perturbed
ones in the ball; ``reset(index)`` is called when the episodes of those batch rows end (for
attacks with per-episode state); learned attacks (``learned = True``) are trained by ``fit``
before use, within a budget of environment steps.
"""

from __future__ import annotations

import dataclasses
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import torch

from robustrl.errors import ConfigError
from robustrl.threat import ObservationBall
from robustrl.views import PolicyView


@dataclasses.dataclass
class FitContext:
    """What an attack may use to prepare itself.

    ``make_env()`` returns a fresh copy of the victim's environment (raw observations, env-unit
    actions); ``budget`` is the environment-step budget of learned attacks (None: not given);
    ``cache_dir`` is a folder where fitted parts may be saved and reused (None: no caching).
    """

    make_env: Callable[[], gym.Env]
    budget: int | None = None
    cache_dir: Path | None = None
    seed: int = 0
    progress: bool = True


@dataclasses.dataclass
class AttackConfig:
    """Settings shared by all attacks; subclasses add their own fields."""


class Attack(ABC):
    """Base class of every evaluation attack."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[AttackConfig]] = AttackConfig
    requires: ClassVar[tuple[str, ...]] = ()  # e.g. ("q_value",): what the victim must provide
    learned: ClassVar[bool] = False
    description: ClassVar[str] = ""

    def __init__(
        self,
        view: PolicyView,
        ball: ObservationBall,
        config: AttackConfig | None = None,
        seed: int = 0,
    ):
        missing = [need for need in self.requires if not getattr(view, f"has_{need}")]
        if missing:
            raise ConfigError(
                f"attack {self.name!r} needs the victim's {', '.join(missing)}, which {view.kind} does not have"
                + self.alternative_hint(view)
            )
        self.view, self.ball = view, ball
        self.config = config if config is not None else self.config_class()
        self.generator = torch.Generator().manual_seed(seed)

    @staticmethod
    def alternative_hint(view: PolicyView) -> str:
        if view.has_state_value:
            return "; use pgd-minv (state-value critic) or mad"
        if view.has_q_value:
            return "; use pgd-minq (Q critic) or mad"
        return "; use mad, random, rs or a learned attack"

    @abstractmethod
    def perturb(self, obs: torch.Tensor) -> torch.Tensor:
        """Perturbed observations (B, obs_dim) inside ``ball`` around ``obs``."""

    def reset(self, index: torch.Tensor | None = None) -> None:  # noqa: B027 (optional hook)
        """Episodes of batch rows ``index`` (all if None) ended; stateless attacks ignore it."""

    def fit(self, context: FitContext) -> dict[str, Any]:
        """Prepare the attack before evaluation (train a learned attacker, fit a critic).

        Returns information to report (e.g. training steps used). Stateless attacks have
        nothing to fit.
        """
        return {}

    def variants(self) -> list[Attack]:
        """Attacks to evaluate under this name; the worst counts (e.g. Robust Sarsa's scan)."""
        return [self]

    @property
    def label(self) -> str:
        """Name of this variant in reports (e.g. ``rs[eps_rs=0.05,reg=0.1]``)."""
        return self.name

    def uniform_start(self, obs: torch.Tensor) -> torch.Tensor:
        """A uniform random point in the ball (the random start of PGD / SGLD)."""
        u = torch.rand(obs.shape, generator=self.generator, dtype=obs.dtype)
        r = self.ball.radius(obs)
        return self.ball.project(obs, obs + (2.0 * u - 1.0) * r)


def parse_attack_config(
    config_class: type[AttackConfig], name: str, values: dict[str, Any]
) -> AttackConfig:
    """Build an attack's config from ``{field: value}``, checking names and types."""
    from robustrl.config import _coerce

    fields = {f.name: f for f in dataclasses.fields(config_class)}
    hints = typing.get_type_hints(config_class)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise ConfigError(f"attack {name!r} has no setting {key!r} (settings: {known})")
        kwargs[key] = _coerce(f"{name}.{key}", value, hints[key])
    return config_class(**kwargs)
