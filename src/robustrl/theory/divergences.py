"""Deformed logarithm and exponential, the alpha-divergence and its (unnormalised) conjugate.

Convention (Amari's alpha-divergence between positive measures, the family Brekelmans et al. 2022
use; their exact parameterisation could not be checked, see docs/THEORY.md Sec. 6), for a base
policy ``pi0`` and a measure ``mu`` over actions:

    D_alpha[pi0 : mu] = 1/(alpha (1 - alpha)) sum_a [(1 - alpha) pi0 + alpha mu - pi0^(1-alpha) mu^alpha]
                      = 1/alpha sum_a [pi0 - mu + mu log_alpha(mu / pi0)]

with the deformed logarithm ``log_alpha(u) = (u^(alpha-1) - 1) / (alpha - 1)`` and its inverse
``exp_alpha(u) = [1 + (alpha - 1) u]_+^(1/(alpha-1))``. ``alpha -> 1`` gives the (unnormalised)
KL divergence ``sum_a mu log(mu/pi0) - mu + pi0``, which is ``KL(mu || pi0)`` for normalised
``mu``; ``alpha = 2`` gives half the Pearson chi^2 divergence; ``alpha -> 0`` would be
``KL(pi0 || mu)`` (not supported). The gradient is ``d D_alpha / d mu = log_alpha(mu / pi0)``.

All functions work on numpy arrays and reduce over the LAST axis (the action axis), so a table
of shape (S, A) is treated as S independent states.
"""

from __future__ import annotations

import numpy as np

# alpha closer to 1 than this is treated as exactly KL (the formulas below are accurate to
# about 1e-12 relative down to |alpha - 1| = 1e-8 thanks to expm1/log1p).
KL_ALPHA_TOL = 1e-12


def is_kl(alpha: float) -> bool:
    """True when ``alpha`` is (numerically) 1, the KL divergence."""
    return abs(alpha - 1.0) <= KL_ALPHA_TOL


def log_alpha(u: np.ndarray, alpha: float) -> np.ndarray:
    """Deformed log ``(u^(alpha-1) - 1)/(alpha - 1)`` for ``u >= 0``; ``log`` at alpha = 1.

    ``log_alpha(0) = -1/(alpha - 1)`` for alpha > 1 (finite) and ``-inf`` for alpha < 1.
    """
    u = np.asarray(u, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if is_kl(alpha):
            return np.log(u)
        return np.expm1((alpha - 1.0) * np.log(u)) / (alpha - 1.0)


def exp_alpha(u: np.ndarray, alpha: float) -> np.ndarray:
    """Deformed exp ``[1 + (alpha-1) u]_+^(1/(alpha-1))``, the inverse of ``log_alpha``; ``exp`` at 1.

    For alpha > 1 it is 0 where ``1 + (alpha-1) u <= 0`` (sparse policies); for alpha < 1 it is
    ``+inf`` there (``u >= 1/(1 - alpha)`` is outside its domain).
    """
    u = np.asarray(u, dtype=float)
    if is_kl(alpha):
        with np.errstate(over="ignore"):
            return np.exp(u)
    base = (alpha - 1.0) * u
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inside = base > -1.0
        value = np.exp(np.log1p(np.where(inside, base, 0.0)) / (alpha - 1.0))
    outside = 0.0 if alpha > 1.0 else np.inf
    return np.where(inside, value, outside)


def xlog_alpha_ratio(mu: np.ndarray, pi0: np.ndarray, alpha: float) -> np.ndarray:
    """Elementwise ``mu * log_alpha(mu / pi0)`` with its limit at ``mu = 0``.

    The limit is 0 for alpha > 0 and ``-inf`` for alpha < 0 (``mu^alpha / (alpha - 1)``), which
    makes ``D_alpha = +inf`` there after the division by ``alpha < 0``.
    """
    mu = np.asarray(mu, dtype=float)
    pi0 = np.asarray(pi0, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = mu * log_alpha(mu / pi0, alpha)
    zero_limit = -np.inf if alpha < 0 else 0.0
    return np.where(mu > 0, value, zero_limit)


def divergence(mu: np.ndarray, pi0: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """``D_alpha[pi0 : mu]`` over the last axis (shape ``mu.shape[:-1]``); KL(mu || pi0) at alpha = 1.

    ``mu`` may be unnormalised (the paper's conjugate is taken over positive measures); for a
    probability vector the ``pi0 - mu`` terms cancel. Stable form (ALGORITHMS.md Sec. 6
    deformed log): ``1/alpha sum [pi0 - mu + mu log_alpha(mu/pi0)]``.
    """
    mu = np.asarray(mu, dtype=float)
    pi0 = np.asarray(pi0, dtype=float)
    terms = pi0 - mu + xlog_alpha_ratio(mu, pi0, alpha)
    if is_kl(alpha):
        return terms.sum(axis=-1)
    return terms.sum(axis=-1) / alpha


def conjugate_unnormalised(dr: np.ndarray, pi0: np.ndarray, beta: float, alpha: float = 1.0):
    """``(1/beta) Omega*(dr) = sup_{mu >= 0} <mu, dr> - (1/beta) D_alpha[pi0 : mu]`` (shape ``dr.shape[:-1]``).

    Closed form (stationarity at ``mu = pi0 exp_alpha(beta dr)``; derived in docs/THEORY.md Sec. 6):
    ``1/(alpha beta) sum_a pi0 exp_alpha(beta dr)^alpha - 1/(alpha beta)``, KL:
    ``(1/beta) sum_a pi0 (exp(beta dr) - 1)``. For alpha < 1 it is ``+inf`` where
    ``beta dr >= 1/(1 - alpha)``. NOT the conjugate that defines this module's feasible set:
    see ``robustrl.theory.feasible`` (conjugate over normalised policies).
    """
    dr = np.asarray(dr, dtype=float)
    pi0 = np.asarray(pi0, dtype=float)
    u = beta * dr
    if is_kl(alpha):
        with np.errstate(over="ignore"):
            return (pi0 * np.expm1(u)).sum(axis=-1) / beta
    base = (alpha - 1.0) * u
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inside = base > -1.0
        power = np.exp(alpha * np.log1p(np.where(inside, base, 0.0)) / (alpha - 1.0))
    power = np.where(inside, power, 0.0)
    value = ((pi0 * power).sum(axis=-1) - pi0.sum(axis=-1)) / (alpha * beta)
    if alpha < 1.0:  # outside the domain of exp_alpha the supremum is unbounded
        value = np.where(np.all(inside, axis=-1), value, np.inf)
    return value
