"""The feasible set of reward perturbations: the imagined adversary's budget.

Convention: the conjugate is taken over NORMALISED policies (the simplex), as the policies the
guarantee is about are normalised (Brekelmans et al. 2022 carry the extra normaliser they call ``psi_dr``):

    (1/beta) Omega*(dr) = max_{pi in simplex} <pi, dr> - (1/beta) D_alpha[pi0 : pi]
                        = soft value of the single decision with rewards ``dr``
    R = { dr : Omega*(dr(s, .)) <= 0 for every state s }

KL: ``(1/beta) Omega*(dr) = (1/beta) log sum_a pi0 exp(beta dr)``, so ``R = {sum_a pi0 exp(beta dr) <= 1}``
(ALGORITHMS.md Sec. 6). alpha: ``(1/beta) Omega*(dr) = psi + 1/(alpha beta) (sum_a pi0 exp_alpha(beta (dr - psi))^alpha - 1)``
with ``psi`` the normaliser of ``dr``. It is shift-equivariant, ``Omega*(dr + c) = Omega*(dr) + c``,
so ``dr - Omega*(dr)`` lies on the boundary and every feasible ``dr`` is a boundary point minus a
constant ``>= 0``.

Guarantee (Fenchel-Young; the paper's generalisation guarantee): for any policy ``pi`` and ``dr`` in R,
``<pi, r - dr> >= <pi, r> - (1/beta) D_alpha[pi0 : pi] - (1/beta) Omega*(dr) >= <pi, r> - (1/beta) D_alpha[pi0 : pi]``,
with equality at ``dr = dr_pi`` (``single.worst_case_perturbation``).

The conjugate over unnormalised measures (``divergences.conjugate_unnormalised``) defines a
SMALLER set (``Omega*_norm <= Omega*_unnorm``): the guarantee holds there too but, for alpha != 1,
is not tight, since ``dr_pi`` lies outside it. For KL the two sets coincide.
"""

from __future__ import annotations

import numpy as np

from robustrl.theory.single import _check, _solve
from robustrl.theory.validation import check_finite


def conjugate(
    dr: np.ndarray, pi0: np.ndarray | None = None, beta: float = 1.0, alpha: float = 1.0
) -> np.ndarray:
    """``(1/beta) Omega*(dr)`` over normalised policies, last axis reduced; ``<= 0`` means feasible."""
    dr, pi0, beta, alpha = _check(dr, pi0, beta, alpha, "perturbation")
    return _solve(dr, pi0, beta, alpha)[2]


def is_feasible(
    dr: np.ndarray,
    pi0: np.ndarray | None = None,
    beta: float = 1.0,
    alpha: float = 1.0,
    tol: float = 1e-12,
) -> np.ndarray:
    """Boolean array of shape ``dr.shape[:-1]``: ``conjugate(dr) <= tol``."""
    return conjugate(dr, pi0, beta, alpha) <= tol


def project_to_boundary(
    dr: np.ndarray, pi0: np.ndarray | None = None, beta: float = 1.0, alpha: float = 1.0
) -> np.ndarray:
    """Shift each ``dr`` (..., A) by a constant onto the boundary: ``dr - Omega*(dr)``."""
    dr = check_finite(dr, "perturbation")
    return dr - conjugate(dr, pi0, beta, alpha)[..., None]


def sample_feasible(
    n: int,
    pi0: np.ndarray,
    beta: float = 1.0,
    alpha: float = 1.0,
    rng: np.random.Generator | None = None,
    scale: float | None = None,
    boundary: bool = False,
) -> np.ndarray:
    """``n`` random feasible perturbations, shape ``(n, *pi0.shape)`` (pi0: (A,) or (S, A)).

    Directions are Gaussian with a per-sample scale drawn log-uniformly in ``[scale/100, 10 scale]``
    (default ``scale = 1/beta``, the set's natural size), shifted onto the boundary; unless
    ``boundary``, each is then lowered by an exponential slack of mean ``scale`` (interior points).
    """
    rng = np.random.default_rng() if rng is None else rng
    pi0 = np.asarray(pi0, dtype=float)
    scale = 1.0 / beta if scale is None else float(scale)
    shape = (n, *pi0.shape)
    sizes = scale * 10.0 ** rng.uniform(-2.0, 1.0, size=(n,) + (1,) * pi0.ndim)
    dr = project_to_boundary(sizes * rng.standard_normal(shape), pi0, beta, alpha)
    if not boundary:
        dr = dr - rng.exponential(scale, size=shape[:-1] + (1,))
    return dr


def feasible_grid(
    pi0: np.ndarray, beta: float, alpha: float, x: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """``Omega*`` on the grid ``dr = (x_j, y_i)`` for TWO actions; shape (len(y), len(x))."""
    xx, yy = np.meshgrid(np.asarray(x, float), np.asarray(y, float))
    return conjugate(np.stack([xx, yy], axis=-1), pi0, beta, alpha)
