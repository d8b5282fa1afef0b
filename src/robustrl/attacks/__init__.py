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
    """Checked comma-separated attack names; ``all`` expands to every observation attack this
    victim supports, ``all-action`` to every action attack it supports."""
    from robustrl.attacks.action import ACTION_ATTACKS

    groups = {"all": ATTACKS, "all-action": ACTION_ATTACKS}
    names: list[str] = []
    for name in (n.strip() for n in spec.split(",")):
        if name in groups:
            supported = (
                n for n, c in groups[name].items() if all(_has(view, r) for r in c.requires)
            )
            names += [n for n in supported if n not in names]
        elif name in ATTACKS or name in ACTION_ATTACKS:
            names += [name] if name not in names else []
        elif name:
            known = ", ".join([*ATTACKS, *ACTION_ATTACKS])
            raise ConfigError(
                f"unknown attack {name!r}; choose from {known}, 'all' or 'all-action'"
            )
    if not names:
        raise ConfigError("--attacks is empty; give attack names, 'all' or 'all-action'")
    return names


def _has(view: PolicyView, capability: str) -> bool:
    return bool(getattr(view, f"has_{capability}", False))


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
