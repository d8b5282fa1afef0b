"""Numerical check of the generalisation guarantee (Brekelmans et al. 2022; ALGORITHMS.md Sec. 6).

For a fixed policy ``pi`` and every perturbation ``dr`` in the feasible set R (``feasible.py``),

    E_pi[r - dr] >= J(pi) = E_pi[r] - (1/beta) D_alpha[pi0 : pi]          (single decision)
    sum_s d_pi(s) <pi(.|s), r(s,.) - dr(s,.)> >= J(pi) = rho0 . V^pi_reg   (MDP)

The verifier searches for the tightest ``dr`` two ways, independently of the closed form
``single.worst_case_perturbation``: (1) random points on the boundary of R (interior points are
boundary points minus a constant >= 0, so they can only do worse), and (2) scipy's SLSQP on
``min_dr <pi, r - dr> s.t. Omega*(dr) <= 0``, whose constraint gradient is the policy of the
single decision with rewards ``dr`` (Danskin). In the MDP the problem separates over states
(the constraint is per state and the objective a sum weighted by ``d_pi(s) >= 0``), so SLSQP runs
state by state. The guarantee holds when ``gap = minimum - objective >= -tol``; the theory says
the minimum equals the objective (``dr_pi`` attains it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from robustrl.errors import ConfigError
from robustrl.theory.divergences import divergence
from robustrl.theory.feasible import sample_feasible
from robustrl.theory.mdp import TabularMDP, _check_pi0, occupancy, regularised_policy_evaluation
from robustrl.theory.single import _broadcast_pi0, _check, _solve
from robustrl.theory.validation import check_distribution


@dataclass(frozen=True)
class GuaranteeCheck:
    """Outcome of a verification: ``minimum`` over the feasible set vs the regularised ``objective``."""

    objective: float  # J(pi): the regularised objective (the promised lower bound)
    minimum: float  # the smallest expected perturbed reward found (sampling and SLSQP)
    gap: float  # minimum - objective; >= -tol when the guarantee holds, ~0 when it is tight
    argmin: np.ndarray  # the tightest feasible perturbation found, shape of the rewards
    sampled_minimum: float
    optimised_minimum: float
    n_samples: int
    tol: float

    @property
    def holds(self) -> bool:
        """True if no feasible perturbation found pushes the expected reward below the objective."""
        return self.gap >= -self.tol

    def summary(self) -> str:
        return (
            f"regularised objective {self.objective:.10g}; min over feasible perturbations "
            f"{self.minimum:.10g} (sampling {self.sampled_minimum:.10g} over {self.n_samples} "
            f"boundary points, SLSQP {self.optimised_minimum:.10g}); gap {self.gap:.3g}; "
            f"guarantee {'holds' if self.holds else 'VIOLATED'} (tol {self.tol:g})"
        )


def _minimise_state(policy, rewards, pi0, beta, alpha) -> np.ndarray:
    """SLSQP for ``min_x <pi, r - x>`` s.t. ``Omega*(x) <= 0``; returns a feasible ``x``, shape (A,)."""
    result = minimize(
        lambda x: float(policy @ (rewards - x)),
        np.zeros_like(rewards),  # 0 is feasible (on the boundary: Omega*(0) = 0)
        jac=lambda x: -policy,
        method="SLSQP",
        constraints=[
            {
                "type": "ineq",
                "fun": lambda x: -float(_solve(x, pi0, beta, alpha)[2]),
                "jac": lambda x: -_solve(x, pi0, beta, alpha)[0],
            }
        ],
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    x = result.x
    excess = float(_solve(x, pi0, beta, alpha)[2])
    return x - max(excess, 0.0)  # SLSQP may end a hair outside R: shift back in


def verify_single(
    policy: np.ndarray,
    rewards: np.ndarray,
    pi0: np.ndarray | None = None,
    beta: float = 1.0,
    alpha: float = 1.0,
    n_samples: int = 5000,
    seed: int = 0,
    tol: float = 1e-8,
) -> GuaranteeCheck:
    """Check ``<pi, r - dr> >= <pi, r> - D_alpha[pi0 : pi]/beta`` over the feasible set; shapes (A,)."""
    rewards, pi0, beta, alpha = _check(rewards, pi0, beta, alpha)
    if rewards.ndim != 1:
        raise ConfigError(f"rewards must be a vector (A,), got shape {rewards.shape}")
    policy = np.array(_broadcast_pi0(check_distribution(policy, "policy"), rewards.shape, "policy"))
    if n_samples < 1:
        raise ConfigError(f"n_samples must be >= 1, got {n_samples}")
    objective = float(policy @ rewards - divergence(policy, pi0, alpha) / beta)
    samples = sample_feasible(
        n_samples, pi0, beta, alpha, np.random.default_rng(seed), boundary=True
    )
    values = (rewards - samples) @ policy
    best = int(np.argmin(values))
    optimised = _minimise_state(policy, rewards, pi0, beta, alpha)
    optimised_value = float(policy @ (rewards - optimised))
    argmin = optimised if optimised_value <= values[best] else samples[best]
    minimum = min(optimised_value, float(values[best]))
    return GuaranteeCheck(
        objective=objective,
        minimum=minimum,
        gap=minimum - objective,
        argmin=argmin,
        sampled_minimum=float(values[best]),
        optimised_minimum=optimised_value,
        n_samples=n_samples,
        tol=tol,
    )


def verify_mdp(
    mdp: TabularMDP,
    policy: np.ndarray,
    pi0: np.ndarray | None = None,
    beta: float = 1.0,
    alpha: float = 1.0,
    n_samples: int = 2000,
    seed: int = 0,
    tol: float = 1e-8,
) -> GuaranteeCheck:
    """The sequential guarantee: discounted perturbed return from ``mdp.initial`` >= ``rho0 . V^pi_reg``.

    ``policy``: (S, A). The argmin has shape (S, A); states the policy never visits keep dr = 0.
    """
    _, pi0_full, beta, alpha = _check(mdp.rewards, _check_pi0(pi0, mdp), beta, alpha)
    policy = check_distribution(policy, "policy")
    if policy.shape != mdp.rewards.shape:
        raise ConfigError(f"policy must have shape {mdp.rewards.shape}, got {policy.shape}")
    if n_samples < 1:
        raise ConfigError(f"n_samples must be >= 1, got {n_samples}")
    visits = occupancy(mdp, policy)  # (S,)
    objective = float(
        mdp.initial @ regularised_policy_evaluation(mdp, policy, pi0_full, beta, alpha)
    )

    def perturbed_return(dr: np.ndarray) -> np.ndarray:  # dr: (..., S, A) -> (...)
        return ((policy * (mdp.rewards - dr)).sum(axis=-1) * visits).sum(axis=-1)

    samples = sample_feasible(
        n_samples, pi0_full, beta, alpha, np.random.default_rng(seed), boundary=True
    )
    values = perturbed_return(samples)
    best = int(np.argmin(values))
    optimised = np.zeros_like(mdp.rewards)
    for s in np.flatnonzero(visits > 0):
        optimised[s] = _minimise_state(policy[s], mdp.rewards[s], pi0_full[s], beta, alpha)
    optimised_value = float(perturbed_return(optimised))
    argmin = optimised if optimised_value <= values[best] else samples[best]
    minimum = min(optimised_value, float(values[best]))
    return GuaranteeCheck(
        objective=objective,
        minimum=minimum,
        gap=minimum - objective,
        argmin=argmin,
        sampled_minimum=float(values[best]),
        optimised_minimum=optimised_value,
        n_samples=n_samples,
        tol=tol,
    )
