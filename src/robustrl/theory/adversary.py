"""The link to VALT-SOFT: the soft-worst observation adversary is the same KL dual.

VALT-SOFT (main paper, Lemma 4.7 / Eq. 10; ALGORITHMS.md Sec. 3) perturbs observations with

    nu*(o~ | o) = p(o~ | o) exp(-V(o, o~) / lambda) / Z(o),

the minimiser of ``E_nu[V(o, o~)] + lambda KL(nu || p)``. Flip the sign: the adversary MAXIMISES
``E_nu[-V] - lambda KL(nu || p)``, which is exactly the KL-regularised single decision of
``single.py`` with "actions" o~, rewards ``-V``, base policy ``p`` and ``beta = 1/lambda``. So

    nu*            = solve_single(-V, p, beta=1/lambda).policy        (single.py, KL)
    soft-worst value = -solve_single(...).value = -lambda log E_p exp(-V/lambda)  (a soft minimum of V)

and the imagined adversary of the adversary is ``dr*(o~) = -V(o~) + soft-worst value`` (the KL
``r - V_reg`` with ``r = -V`` and ``V_reg = -soft-worst value``). It makes ``V + dr*`` constant
(indifference), and for every ``delta`` with ``E_p exp(delta/lambda) <= 1`` the soft-worst adversary
still gets ``E_nu*[V + delta] <= soft-worst value`` (the guarantee, with ``-V`` as the reward).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robustrl.theory.single import SingleDecision, solve_single
from robustrl.theory.validation import check_finite, check_positive


@dataclass(frozen=True)
class SoftWorstAdversary:
    """``nu`` (K,): the adversary's distribution over K candidate observations; ``value``: E under
    the soft-worst adversary of V plus the KL cost, ``-lambda log E_p exp(-V/lambda)``."""

    nu: np.ndarray
    value: float
    expected_value: float  # E_nu[V], without the KL cost
    decision: SingleDecision  # the same problem seen as a regularised decision with rewards -V


def soft_worst_adversary(
    values: np.ndarray, lam: float, prior: np.ndarray | None = None
) -> SoftWorstAdversary:
    """The soft-worst adversary over K candidate perturbed observations with agent values ``V`` (K,).

    ``prior`` is ``p(o~ | o)`` over the candidates (uniform by default, as for a uniform prior on
    the eps-ball sampled K times); ``lam`` the KL temperature lambda > 0.
    """
    lam = check_positive(lam, "lambda", " (the KL temperature of the adversary)")
    values = check_finite(values, "values")
    decision = solve_single(-values, prior, beta=1.0 / lam, alpha=1.0)
    nu = decision.policy
    return SoftWorstAdversary(
        nu=nu,
        value=-float(decision.value),
        expected_value=-float(nu @ decision.rewards),
        decision=decision,
    )
