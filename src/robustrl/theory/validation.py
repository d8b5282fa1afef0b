"""Input checks shared by the theory module: each failure is a one-line ``ConfigError``."""

from __future__ import annotations

import math

import numpy as np

from robustrl.errors import ConfigError


def check_positive(value: float, name: str, meaning: str = "") -> float:
    """A finite number > 0, else a ConfigError naming ``name`` and the bad value."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number > 0, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{name} must be finite and > 0{meaning}, got {value!r}")
    return number


def check_beta(beta: float) -> float:
    """The inverse regulariser strength ``beta`` (regulariser weight ``1/beta``) must be finite and > 0."""
    return check_positive(beta, "beta", " (regulariser strength 1/beta)")


def check_alpha(alpha: float) -> float:
    """The alpha of the alpha-divergence: any finite real except 0 (1 is the KL divergence)."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ConfigError(f"alpha must be a number, got {alpha!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"alpha must be finite, got {alpha!r}")
    if value == 0:
        raise ConfigError(
            "alpha = 0 (the reverse-KL limit KL(pi0 || pi)) is not supported; use alpha != 0"
        )
    return value


def check_finite(values: np.ndarray | list[float], name: str) -> np.ndarray:
    """A float array with only finite entries and at least one element."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be numbers, got {values!r}") from None
    if array.size == 0:
        raise ConfigError(f"{name} is empty")
    if not np.all(np.isfinite(array)):
        bad = array[~np.isfinite(array)].ravel()[0]
        raise ConfigError(f"{name} must be finite, found {bad}")
    return array


def check_distribution(
    values: np.ndarray | list[float], name: str, strictly_positive: bool = False
) -> np.ndarray:
    """Probability vectors along the last axis: entries >= 0 (or > 0) summing to 1 (tol 1e-8)."""
    array = check_finite(values, name)
    if array.ndim == 0:
        raise ConfigError(f"{name} must be a vector of probabilities, got the scalar {array}")
    if strictly_positive and np.any(array <= 0):
        bad = array[array <= 0].ravel()[0]
        raise ConfigError(
            f"{name} must have all entries > 0 (the divergence to it is infinite otherwise), found {bad}"
        )
    if np.any(array < 0):
        raise ConfigError(f"{name} must have entries >= 0, found {array[array < 0].ravel()[0]}")
    sums = array.sum(axis=-1)
    if not np.allclose(sums, 1.0, rtol=0, atol=1e-8):
        bad = np.ravel(sums)[np.argmax(np.abs(np.ravel(sums) - 1.0))]
        raise ConfigError(f"{name} must sum to 1 along its last axis, got a sum of {bad:.10g}")
    return array


def check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise when two arrays that pair up entry by entry have different shapes."""
    if a.shape != b.shape:
        raise ConfigError(f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}")
