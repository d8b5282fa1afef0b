"""Policy regularisation as an imagined reward adversary (Brekelmans et al., TMLR 2022).

A KL- or alpha-divergence-regularised policy is the optimal response to an adversary that
perturbs rewards, ``r' = r - dr``, within a feasible set fixed by the base policy ``pi0`` and the
strength ``1/beta``. This package solves single decisions and tabular MDPs, computes the
worst-case perturbation and the feasible set, verifies the robustness guarantee numerically, and
draws the paper's figures. Guide and equations: ``docs/THEORY.md``.
"""

from robustrl.theory.adversary import SoftWorstAdversary, soft_worst_adversary
from robustrl.theory.divergences import (
    conjugate_unnormalised,
    divergence,
    exp_alpha,
    log_alpha,
)
from robustrl.theory.feasible import (
    conjugate,
    feasible_grid,
    is_feasible,
    project_to_boundary,
    sample_feasible,
)
from robustrl.theory.gridworld import GridWorld, make_gridworld
from robustrl.theory.mdp import (
    SoftValueIteration,
    TabularMDP,
    occupancy,
    policy_evaluation,
    regularised_policy_evaluation,
    soft_bellman,
    soft_value_iteration,
)
from robustrl.theory.single import (
    SingleDecision,
    regularised_objective,
    regularised_policy,
    soft_value,
    solve_single,
    worst_case_perturbation,
)
from robustrl.theory.verify import GuaranteeCheck, verify_mdp, verify_single

__all__ = [
    "GridWorld",
    "GuaranteeCheck",
    "SingleDecision",
    "SoftValueIteration",
    "SoftWorstAdversary",
    "TabularMDP",
    "conjugate",
    "conjugate_unnormalised",
    "divergence",
    "exp_alpha",
    "feasible_grid",
    "is_feasible",
    "log_alpha",
    "make_gridworld",
    "occupancy",
    "policy_evaluation",
    "project_to_boundary",
    "regularised_objective",
    "regularised_policy",
    "regularised_policy_evaluation",
    "sample_feasible",
    "soft_bellman",
    "soft_value",
    "soft_value_iteration",
    "soft_worst_adversary",
    "solve_single",
    "verify_mdp",
    "verify_single",
    "worst_case_perturbation",
]
