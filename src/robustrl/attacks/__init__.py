"""Evaluation attacks by name: ``make_attack("pgd-minq", view, ball)``."""

from __future__ import annotations

from typing import Any

from robustrl.attacks.base import Attack, AttackConfig, parse_attack_config
from robustrl.attacks.gradient import MADAttack, PGDMinQ, PGDMinV, RandomAttack
from robustrl.errors import ConfigError
from robustrl.threat import ObservationBall
from robustrl.views import PolicyView

ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls for cls in (RandomAttack, MADAttack, PGDMinQ, PGDMinV)
}


def register(cls: type[Attack]) -> type[Attack]:
    """Add an attack class to the registry (used by the modules defining learned attacks)."""
    ATTACKS[cls.name] = cls
    return cls


def attack_names() -> list[str]:
    return list(ATTACKS)


def resolve_names(spec: str, view: PolicyView) -> list[str]:
    """``"all"`` -> every attack this victim supports; else a checked comma-separated list."""
    if spec.strip() == "all":
        return [
            n for n, cls in ATTACKS.items() if all(getattr(view, f"has_{r}") for r in cls.requires)
        ]
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise ConfigError("--attacks is empty; give attack names or 'all'")
    for name in names:
        if name not in ATTACKS:
            raise ConfigError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)} or 'all'")
    return names


def make_attack(
    name: str,
    view: PolicyView,
    ball: ObservationBall,
    settings: dict[str, Any] | None = None,
    seed: int = 0,
) -> Attack:
    if name not in ATTACKS:
        raise ConfigError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")
    cls = ATTACKS[name]
    return cls(view, ball, parse_attack_config(cls.config_class, name, settings or {}), seed=seed)


# Attacks defined in their own modules register themselves on import (after ``register`` exists).
from robustrl.attacks import learned, sarsa  # noqa: E402, F401

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackConfig",
    "attack_names",
    "make_attack",
    "register",
    "resolve_names",
]
