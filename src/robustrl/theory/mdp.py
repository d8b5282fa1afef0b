"""Tabular MDPs: regularised (soft) value iteration, exact policy evaluation, occupancy.

Soft Bellman equations (ALGORITHMS.md Sec. 6, sequential case), per state ``s``:

    Q*(s, a) = r(s, a) + gamma sum_s' P(s'|s, a) V*(s')
    V*(s)    = max_{pi(.|s)} <pi(.|s), Q*(s, .)> - (1/beta) D_alpha[pi0(.|s) : pi(.|s)]

i.e. every state is the single decision of ``single.py`` with rewards ``Q*(s, .)``. Hence
``pi*(.|s)``, the per-state worst-case perturbation ``dr*(s, a) = (1/beta) log_alpha(pi*/pi0) + c(s)``
(KL: ``Q*(s, a) - V*(s)``) and indifference
``r(s, a) - dr*(s, a) + gamma E_{s'} V*(s') = V*(s)`` on the support of ``pi*(.|s)``.

Guarantee (sequential): with ``d_pi(s) = sum_t gamma^t P(s_t = s)`` from ``rho0``, and any
``dr`` feasible in every state, ``sum_s d_pi(s) <pi(.|s), r(s, .) - dr(s, .)> >= J(pi)``, the
regularised objective ``sum_s d_pi(s) [<pi, r> - D_alpha/beta]`` (per-state Fenchel-Young,
weighted by ``d_pi >= 0``; see ``verify.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from robustrl.errors import ConfigError
from robustrl.theory.divergences import divergence, is_kl
from robustrl.theory.single import _broadcast_pi0, _perturbation, _solve
from robustrl.theory.validation import (
    check_alpha,
    check_beta,
    check_distribution,
    check_finite,
)


@dataclass(frozen=True)
class TabularMDP:
    """A finite discounted MDP.

    transitions: (S, A, S) with ``transitions[s, a, s'] = P(s' | s, a)``;
    rewards: (S, A) expected immediate reward; gamma in [0, 1); initial: (S,) start distribution.
    """

    transitions: np.ndarray
    rewards: np.ndarray
    gamma: float
    initial: np.ndarray
    state_names: list[str] = field(default_factory=list)
    action_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        transitions = check_distribution(self.transitions, "transitions")
        rewards = check_finite(self.rewards, "rewards")
        if transitions.ndim != 3 or transitions.shape[0] != transitions.shape[2]:
            raise ConfigError(f"transitions must have shape (S, A, S), got {transitions.shape}")
        if rewards.shape != transitions.shape[:2]:
            raise ConfigError(
                f"rewards must have shape (S, A) = {transitions.shape[:2]}, got {rewards.shape}"
            )
        if not 0.0 <= float(self.gamma) < 1.0:
            raise ConfigError(f"gamma must be in [0, 1), got {self.gamma}")
        initial = check_distribution(self.initial, "initial")
        if initial.shape != (transitions.shape[0],):
            raise ConfigError(
                f"initial must have shape ({transitions.shape[0]},), got {initial.shape}"
            )
        object.__setattr__(self, "transitions", transitions)
        object.__setattr__(self, "rewards", rewards)
        object.__setattr__(self, "gamma", float(self.gamma))
        object.__setattr__(self, "initial", initial)

    @property
    def n_states(self) -> int:
        return self.transitions.shape[0]

    @property
    def n_actions(self) -> int:
        return self.transitions.shape[1]

    def q_values(self, values: np.ndarray) -> np.ndarray:
        """``r(s, a) + gamma sum_s' P(s'|s, a) V(s')``, shape (S, A)."""
        return self.rewards + self.gamma * self.transitions @ values

    def state_transitions(self, policy: np.ndarray) -> np.ndarray:
        """``P_pi[s, s'] = sum_a pi(a|s) P(s'|s, a)``, shape (S, S)."""
        return np.einsum("sa,sat->st", policy, self.transitions)


@dataclass(frozen=True)
class SoftValueIteration:
    """Result of ``soft_value_iteration``: values (S,), q (S, A), policy (S, A), perturbation (S, A)."""

    values: np.ndarray
    q: np.ndarray
    policy: np.ndarray
    perturbation: np.ndarray  # worst-case dr*(s, a)
    residual: float  # max_s |T V - V| at the returned V
    iterations: int
    beta: float
    alpha: float

    @property
    def perturbed_q(self) -> np.ndarray:
        """``r - dr* + gamma E V*`` = ``Q* - dr*``: equal to ``V*(s)`` on the policy's support."""
        return self.q - self.perturbation


def _check_pi0(pi0: np.ndarray | None, mdp: TabularMDP) -> np.ndarray:
    shape = (mdp.n_states, mdp.n_actions)
    if pi0 is None:
        return np.full(shape, 1.0 / mdp.n_actions)
    pi0 = check_distribution(pi0, "pi0", strictly_positive=True)
    return np.array(_broadcast_pi0(pi0, shape))


def soft_bellman(
    mdp: TabularMDP, values: np.ndarray, pi0: np.ndarray, beta: float, alpha: float
) -> np.ndarray:
    """The regularised Bellman optimality operator ``(T V)(s)``; shape (S,)."""
    return _solve(mdp.q_values(values), pi0, beta, alpha)[2]


def soft_value_iteration(
    mdp: TabularMDP,
    pi0: np.ndarray | None = None,
    beta: float = 1.0,
    alpha: float = 1.0,
    tol: float = 1e-12,
    max_iterations: int = 100_000,
) -> SoftValueIteration:
    """Iterate ``V <- T V`` from 0 until ``max |T V - V| <= tol`` (a gamma-contraction).

    ``pi0``: (A,) or (S, A), uniform by default. Raises ConfigError if it does not converge.
    """
    beta, alpha = check_beta(beta), check_alpha(alpha)
    pi0 = _check_pi0(pi0, mdp)
    if max_iterations < 1:
        raise ConfigError(f"max_iterations must be >= 1, got {max_iterations}")
    values = np.zeros(mdp.n_states)
    iterations, step = 0, np.inf
    while step > tol:
        if iterations == max_iterations:
            raise ConfigError(
                f"soft value iteration did not reach tol {tol} in {max_iterations} iterations "
                f"(last step {step:.3g})"
            )
        new_values = soft_bellman(mdp, values, pi0, beta, alpha)
        step = float(np.max(np.abs(new_values - values)))
        values = new_values
        iterations += 1
    q = mdp.q_values(values)
    policy, psi, _ = _solve(q, pi0, beta, alpha)
    residual = float(np.max(np.abs(soft_bellman(mdp, values, pi0, beta, alpha) - values)))
    # per state, the single-decision worst case with rewards Q*(s, .) (see single.solve_single)
    log_ratio = beta * (q - psi[:, None])
    if alpha > 1 and not is_kl(alpha):
        log_ratio = np.maximum(log_ratio, -1.0 / (alpha - 1.0))
    perturbation = _perturbation(policy, log_ratio, pi0, beta, alpha)
    return SoftValueIteration(values, q, policy, perturbation, residual, iterations, beta, alpha)


def _evaluate(mdp: TabularMDP, policy: np.ndarray, r_pi: np.ndarray) -> np.ndarray:
    """Solve ``(I - gamma P_pi) V = r_pi`` for a policy (..., S, A) and r_pi (..., S)."""
    p_pi = np.einsum("...sa,sat->...st", policy, mdp.transitions)
    system = np.eye(mdp.n_states) - mdp.gamma * p_pi
    return np.linalg.solve(system, r_pi[..., None])[..., 0]


def policy_evaluation(mdp: TabularMDP, policy: np.ndarray, rewards: np.ndarray | None = None):
    """Exact ``V^pi = (I - gamma P_pi)^(-1) r_pi`` for per-(s, a) rewards (default the MDP's).

    ``policy``: (S, A) or a batch (..., S, A); returns (S,) or (..., S).
    """
    policy = check_distribution(policy, "policy")
    rewards = mdp.rewards if rewards is None else check_finite(rewards, "rewards")
    return _evaluate(mdp, policy, (policy * rewards).sum(axis=-1))


def regularised_policy_evaluation(
    mdp: TabularMDP,
    policy: np.ndarray,
    pi0: np.ndarray | None = None,
    beta: float = 1.0,
    alpha: float = 1.0,
) -> np.ndarray:
    """``V^pi_reg = (I - gamma P_pi)^(-1) (r_pi - D_alpha[pi0 : pi(.|s)]/beta)``.

    ``policy``: (S, A) or a batch (..., S, A); returns (S,) or (..., S).
    """
    beta, alpha = check_beta(beta), check_alpha(alpha)
    pi0 = _check_pi0(pi0, mdp)
    policy = check_distribution(policy, "policy")
    penalty = divergence(policy, np.broadcast_to(pi0, policy.shape), alpha) / beta
    return _evaluate(mdp, policy, (policy * mdp.rewards).sum(axis=-1) - penalty)


def occupancy(mdp: TabularMDP, policy: np.ndarray) -> np.ndarray:
    """Discounted state visitation ``d_pi = rho0^T (I - gamma P_pi)^(-1)`` (sums to 1/(1-gamma)); (S,)."""
    policy = check_distribution(policy, "policy")
    system = np.eye(mdp.n_states) - mdp.gamma * mdp.state_transitions(policy)
    return np.linalg.solve(system.T, mdp.initial)
