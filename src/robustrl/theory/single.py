"""One decision: the regularised optimal policy, its value and the worst-case reward perturbation.

Problem (Brekelmans et al. 2022, single step; ALGORITHMS.md Sec. 6): for rewards ``r`` (shape
(A,)), a base policy ``pi0`` and regulariser strength ``1/beta``

    V = max_{pi in simplex} <pi, r> - (1/beta) D_alpha[pi0 : pi]

KL (alpha = 1, ALGORITHMS.md Sec. 6): ``pi*(a) = pi0(a) exp(beta (r(a) - V))``,
``V = (1/beta) log sum_a pi0 exp(beta r)``.

alpha-divergence (derived here from the deformed log/exp of ALGORITHMS.md Sec. 6). Stationarity
of the Lagrangian with multiplier ``psi`` for ``sum pi = 1`` (and for ``pi >= 0``) gives
``r(a) - (1/beta) log_alpha(pi(a)/pi0(a)) - psi = 0`` on the support, i.e.

    pi*(a) = pi0(a) exp_alpha(beta (r(a) - psi)),     psi: sum_a pi*(a) = 1  (bisection)

For alpha > 1 the policy is sparse (``exp_alpha`` is 0 below ``-1/(alpha-1)``); for alpha < 1 it has
full support. Unlike KL, the normaliser ``psi`` is NOT the value: ``V = <pi*, r> - D_alpha/beta``.

Worst-case perturbation (ALGORITHMS.md Sec. 6: ``dr* = (1/beta) log(pi*/pi0)`` for KL). By convex
duality ``(1/beta) D(pi) = max_dr <pi, dr> - (1/beta) Omega*(dr)`` and the maximiser is the gradient of
the regulariser, defined on the simplex only up to a constant per state:

    dr_pi(a) = (1/beta) log_alpha(pi(a) / pi0(a)) + c_pi,
    c_pi     = (1/beta) (D_alpha[pi0 : pi] - <pi, log_alpha(pi / pi0)>)

``c_pi`` puts ``dr_pi`` exactly on the boundary of the feasible set (its conjugate over normalised
policies is 0, see ``feasible.py``). For KL ``c_pi = 0`` and ``dr* = (1/beta) log(pi*/pi0) = r - V``.
For alpha != 1, ``c_pi = (1/beta) (1/alpha - 1) <pi, log_alpha(pi/pi0)>`` (the paper's
``psi_{dr}``). Indifference: on the support of ``pi*``, ``r(a) - dr*(a) = V`` for every action
(off the support, alpha > 1 only, ``r - dr* <= V``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robustrl.errors import ConfigError
from robustrl.theory.divergences import divergence, exp_alpha, is_kl, log_alpha
from robustrl.theory.validation import (
    check_alpha,
    check_beta,
    check_distribution,
    check_finite,
)

_MAX_BISECTION = 400  # halvings of [min r, max r]; stops earlier when the bracket is one ulp wide


def _broadcast_pi0(pi0: np.ndarray, shape: tuple[int, ...], name: str = "pi0") -> np.ndarray:
    if pi0.shape[-1] != shape[-1]:
        raise ConfigError(f"{name} has {pi0.shape[-1]} actions but the rewards have {shape[-1]}")
    try:
        return np.broadcast_to(pi0, shape)
    except ValueError:
        raise ConfigError(
            f"{name} of shape {pi0.shape} does not match rewards of shape {shape}"
        ) from None


def _solve(q: np.ndarray, pi0: np.ndarray, beta: float, alpha: float):
    """Unchecked solver over the last axis: returns (policy, normaliser psi, value V)."""
    if is_kl(alpha):
        # ALGORITHMS.md Sec. 6: pi* = pi0 exp(beta q) / Z, V = psi = (1/beta) log Z (log-sum-exp)
        z = np.log(pi0) + beta * q
        top = z.max(axis=-1, keepdims=True)
        weights = np.exp(z - top)
        total = weights.sum(axis=-1, keepdims=True)
        policy = weights / total
        psi = (top[..., 0] + np.log(total[..., 0])) / beta
        return policy, psi, psi
    # alpha: sum_a pi0 exp_alpha(beta (q - psi)) is decreasing in psi, >= 1 at psi = min q and
    # <= 1 at psi = max q (exp_alpha(u) >= 1 iff u >= 0), so bisect on [min q, max q].
    lo = q.min(axis=-1)
    hi = q.max(axis=-1)
    for _ in range(_MAX_BISECTION):
        mid = 0.5 * (lo + hi)
        if np.all((mid <= lo) | (mid >= hi)):
            break
        total = (pi0 * exp_alpha(beta * (q - mid[..., None]), alpha)).sum(axis=-1)
        above = total > 1.0
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    psi = 0.5 * (lo + hi)
    policy = pi0 * exp_alpha(beta * (q - psi[..., None]), alpha)
    policy = policy / policy.sum(axis=-1, keepdims=True)
    value = (policy * q).sum(axis=-1) - divergence(policy, pi0, alpha) / beta
    return policy, psi, value


def _check(q, pi0, beta, alpha, name: str = "rewards"):
    q = check_finite(q, name)
    if q.ndim == 0:
        raise ConfigError(f"{name} must be a vector over actions, got the scalar {q}")
    if pi0 is None:
        pi0 = np.full(q.shape[-1], 1.0 / q.shape[-1])
    pi0 = check_distribution(pi0, "pi0", strictly_positive=True)
    pi0 = _broadcast_pi0(pi0, q.shape)
    return q, pi0, check_beta(beta), check_alpha(alpha)


def regularised_policy(
    q: np.ndarray, pi0: np.ndarray | None = None, beta: float = 1.0, alpha: float = 1.0
) -> np.ndarray:
    """The optimal regularised policy for action values ``q`` of shape (..., A); same shape."""
    q, pi0, beta, alpha = _check(q, pi0, beta, alpha, "q")
    return _solve(q, pi0, beta, alpha)[0]


def soft_value(
    q: np.ndarray, pi0: np.ndarray | None = None, beta: float = 1.0, alpha: float = 1.0
) -> np.ndarray:
    """``max_pi <pi, q> - D_alpha[pi0 : pi]/beta`` over the last axis; shape ``q.shape[:-1]``."""
    q, pi0, beta, alpha = _check(q, pi0, beta, alpha, "q")
    return _solve(q, pi0, beta, alpha)[2]


def regularised_objective(
    policy: np.ndarray,
    rewards: np.ndarray,
    pi0: np.ndarray | None = None,
    beta: float = 1.0,
    alpha: float = 1.0,
) -> np.ndarray:
    """``<pi, r> - (1/beta) D_alpha[pi0 : pi]`` for ANY policy; ``policy`` (..., A) -> (...).

    ``rewards`` and ``pi0`` broadcast against ``policy`` (e.g. one reward vector, many policies).
    """
    policy = check_distribution(policy, "policy")
    rewards, pi0, beta, alpha = _check(rewards, pi0, beta, alpha)
    try:
        shape = np.broadcast_shapes(policy.shape, rewards.shape)
    except ValueError:
        raise ConfigError(
            f"policy of shape {policy.shape} does not match rewards of shape {rewards.shape}"
        ) from None
    pi0 = np.broadcast_to(pi0, shape)
    return (policy * rewards).sum(axis=-1) - divergence(policy, pi0, alpha) / beta


def _perturbation(
    policy: np.ndarray, log_ratio: np.ndarray, pi0: np.ndarray, beta: float, alpha: float
):
    """``(1/beta) log_ratio + c_pi`` with ``log_ratio = log_alpha(pi/pi0)`` given."""
    inner = np.where(policy > 0, policy * log_ratio, 0.0).sum(axis=-1)
    shift = (divergence(policy, pi0, alpha) - inner) / beta
    return log_ratio / beta + shift[..., None]


def worst_case_perturbation(
    policy: np.ndarray, pi0: np.ndarray | None = None, beta: float = 1.0, alpha: float = 1.0
) -> np.ndarray:
    """``dr_pi = (1/beta) log_alpha(pi/pi0) + c_pi`` for ANY policy, shape (..., A).

    It is the perturbation in the feasible set that minimises ``<pi, r - dr>`` (for every ``r``):
    ``<pi, dr_pi> = D_alpha[pi0 : pi] / beta``. Entries where ``pi = 0`` are ``-inf`` for
    alpha <= 1 (any very negative perturbation there is worst-case) and finite for alpha > 1.
    """
    policy = check_distribution(policy, "policy")
    _, pi0, beta, alpha = _check(np.zeros(policy.shape), pi0, beta, alpha, "policy")
    log_ratio = log_alpha(policy / pi0, alpha)
    return _perturbation(policy, log_ratio, pi0, beta, alpha)


@dataclass(frozen=True)
class SingleDecision:
    """The solved single-decision problem; arrays have shape (A,) (or (..., A) for batches).

    ``perturbed_rewards = rewards - perturbation`` equals ``value`` on ``support`` (indifference).
    """

    rewards: np.ndarray
    pi0: np.ndarray
    beta: float
    alpha: float
    policy: np.ndarray
    value: np.ndarray  # regularised objective of the optimal policy, shape (...)
    normaliser: np.ndarray  # psi; equals value for KL
    perturbation: np.ndarray  # worst-case dr*
    perturbed_rewards: np.ndarray  # rewards - dr*
    support: np.ndarray  # policy > 0

    @property
    def expected_reward(self) -> np.ndarray:
        """``<pi*, r>``: the unperturbed expected reward (>= value)."""
        return (self.policy * self.rewards).sum(axis=-1)


def solve_single(
    rewards: np.ndarray,
    pi0: np.ndarray | None = None,
    beta: float = 1.0,
    alpha: float = 1.0,
) -> SingleDecision:
    """Solve one regularised decision (``pi0`` defaults to uniform) and its imagined adversary.

    The worst-case perturbation uses the exact log-ratio ``log_alpha(pi*/pi0) = beta (r - psi)``
    (clipped at ``-1/(alpha-1)`` off the support for alpha > 1) rather than the policy itself, so
    actions whose probability underflows to 0 still get a finite perturbation.
    """
    q, pi0_full, beta, alpha = _check(rewards, pi0, beta, alpha)
    policy, psi, value = _solve(q, pi0_full, beta, alpha)
    log_ratio = beta * (q - psi[..., None])
    if alpha > 1 and not is_kl(alpha):
        log_ratio = np.maximum(log_ratio, -1.0 / (alpha - 1.0))
    dr = _perturbation(policy, log_ratio, pi0_full, beta, alpha)
    return SingleDecision(
        rewards=q,
        pi0=pi0_full,
        beta=beta,
        alpha=alpha,
        policy=policy,
        value=value,
        normaliser=psi,
        perturbation=dr,
        perturbed_rewards=q - dr,
        support=policy > 0,
    )
