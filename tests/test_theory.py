"""Policy regularisation as an imagined adversary (robustrl.theory): the math, checked numerically."""

import argparse
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import fsolve

from robustrl.errors import ConfigError, RobustRLError
from robustrl.theory import (
    TabularMDP,
    conjugate,
    conjugate_unnormalised,
    divergence,
    exp_alpha,
    is_feasible,
    log_alpha,
    make_gridworld,
    occupancy,
    policy_evaluation,
    project_to_boundary,
    regularised_objective,
    regularised_policy_evaluation,
    sample_feasible,
    soft_bellman,
    soft_value_iteration,
    soft_worst_adversary,
    solve_single,
    verify_mdp,
    verify_single,
    worst_case_perturbation,
)
from robustrl.theory.cli import add_parser

ALPHAS = [1.0, 0.5, 2.0, 3.0, -1.0]
REWARDS6 = np.array([0.4, 1.0, 0.2, 0.8, -0.3, 0.6])


def random_problem(rng, n_actions=5):
    rewards = rng.uniform(-2, 2, n_actions)
    pi0 = rng.dirichlet(np.ones(n_actions)) * 0.9 + 0.1 / n_actions
    return rewards, pi0


# --- deformed log / exp and the divergence ---------------------------------------------------


@pytest.mark.parametrize("alpha", [*ALPHAS, 1 + 1e-6, 1 - 1e-6])
def test_exp_alpha_inverts_log_alpha(alpha):
    u = np.array([1e-3, 0.1, 0.5, 1.0, 2.0, 7.5])
    # conditioning: near the sparsity threshold (alpha = 3, u = 1e-3) 1 + (alpha-1) log_alpha(u)
    # cancels to u^(alpha-1) = 1e-6, so about 1e-10 relative is all float64 allows
    np.testing.assert_allclose(exp_alpha(log_alpha(u, alpha), alpha), u, rtol=1e-9)
    if abs(alpha - 1) < 1e-3:  # the deformed log tends to log: error O(|alpha - 1| log(u)^2)
        np.testing.assert_allclose(log_alpha(u, alpha), np.log(u), rtol=5e-5)
        np.testing.assert_allclose(exp_alpha(np.log(u), alpha), u, rtol=5e-5)


def test_divergence_matches_textbook_forms():
    rng = np.random.default_rng(1)
    pi, pi0 = rng.dirichlet(np.ones(4)), rng.dirichlet(np.ones(4))
    mu = pi * 1.7  # an unnormalised measure
    np.testing.assert_allclose(divergence(pi, pi0, 1.0), np.sum(pi * np.log(pi / pi0)), rtol=1e-13)
    np.testing.assert_allclose(
        divergence(pi, pi0, 2.0), 0.5 * (np.sum(pi**2 / pi0) - 1), rtol=1e-12
    )
    for alpha in [0.5, 2.0, 3.0, -1.0]:  # Amari's form, as written in divergences.py
        amari = np.sum((1 - alpha) * pi0 + alpha * mu - pi0 ** (1 - alpha) * mu**alpha)
        np.testing.assert_allclose(
            divergence(mu, pi0, alpha), amari / (alpha * (1 - alpha)), rtol=1e-12
        )
    assert divergence(pi0, pi0, 2.0) == pytest.approx(0.0, abs=1e-15)


def test_unnormalised_conjugate_is_the_supremum_over_measures():
    # (1/beta) Omega*_u(dr) = sup_mu <mu, dr> - D[pi0 : mu]/beta, attained at mu = pi0 exp_alpha(beta dr)
    rng = np.random.default_rng(2)
    pi0, beta = np.array([0.2, 0.5, 0.3]), 1.5
    for alpha in [1.0, 0.5, 2.0, -1.0]:
        dr = rng.uniform(-0.3, 0.3, 3)
        mu_star = pi0 * exp_alpha(beta * dr, alpha)
        at_star = mu_star @ dr - divergence(mu_star, pi0, alpha) / beta
        assert conjugate_unnormalised(dr, pi0, beta, alpha) == pytest.approx(at_star, abs=1e-13)
        others = mu_star * rng.uniform(0.5, 1.5, (2000, 3))
        assert np.all(others @ dr - divergence(others, pi0, alpha) / beta <= at_star + 1e-13)


# --- single decision ---------------------------------------------------------------------------


def test_kl_worst_case_lies_on_the_boundary():
    rng = np.random.default_rng(3)
    for _ in range(20):
        rewards, pi0 = random_problem(rng)
        beta = rng.uniform(0.2, 20)
        s = solve_single(rewards, pi0, beta)
        assert np.sum(pi0 * np.exp(beta * s.perturbation)) == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(s.perturbation, rewards - s.value, atol=1e-12)
        np.testing.assert_allclose(s.perturbation, np.log(s.policy / pi0) / beta, atol=1e-10)


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("beta", [0.5, 5.0, 30.0])
def test_indifference_with_the_perturbation_computed_from_the_policy(alpha, beta):
    s = solve_single(REWARDS6, beta=beta, alpha=alpha)
    # the paper's formula applied to the policy alone, not the solver's shortcut r - V
    dr = worst_case_perturbation(s.policy, s.pi0, beta, alpha)
    on = s.policy > 1e-12
    assert on.sum() >= 1
    np.testing.assert_allclose((REWARDS6 - dr)[on], s.value, atol=1e-8)
    np.testing.assert_allclose(dr[on], s.perturbation[on], atol=1e-8)
    assert np.all(s.perturbed_rewards[~s.support] <= s.value + 1e-12)  # off the support (alpha > 1)
    assert conjugate(s.perturbation, s.pi0, beta, alpha) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_alpha_above_one_is_sparse_and_below_one_has_full_support(alpha):
    s = solve_single(REWARDS6, beta=5.0, alpha=alpha)
    assert np.sum(s.policy) == pytest.approx(1.0, abs=1e-14)
    if alpha > 1:
        assert not s.support.all()
    else:
        assert s.support.all()


@pytest.mark.parametrize("alpha", ALPHAS)
def test_value_is_the_maximum_over_a_fine_simplex_grid(alpha):
    rewards, pi0, beta = np.array([0.3, 1.0, 0.7]), np.array([0.5, 0.2, 0.3]), 4.0
    s = solve_single(rewards, pi0, beta, alpha)
    n = 600
    i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1))
    keep = i + j <= n
    grid = np.stack([i[keep], j[keep], n - i[keep] - j[keep]], axis=-1) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        objective = regularised_objective(grid, rewards, pi0, beta, alpha)
    objective = np.where(np.isnan(objective), -np.inf, objective)
    assert objective.max() <= s.value + 1e-12  # nothing beats V*
    assert objective.max() >= s.value - 1e-4  # and the grid gets close (spacing 1/600)
    assert regularised_objective(s.policy, rewards, pi0, beta, alpha) == pytest.approx(
        s.value, abs=1e-13
    )


@settings(max_examples=40, deadline=None)
@given(
    rewards=st.lists(st.floats(-2, 2), min_size=2, max_size=6),
    beta=st.floats(0.1, 20),
    alpha=st.sampled_from(ALPHAS),
    seed=st.integers(0, 2**16),
)
def test_guarantee_property_random_problems(rewards, beta, alpha, seed):
    rng = np.random.default_rng(seed)
    rewards = np.array(rewards)
    pi0 = rng.dirichlet(np.ones(len(rewards))) * 0.8 + 0.2 / len(rewards)
    s = solve_single(rewards, pi0, beta, alpha)
    dr = sample_feasible(500, pi0, beta, alpha, rng)
    assert np.all(conjugate(dr, pi0, beta, alpha) <= 1e-12)
    assert np.all((rewards - dr) @ s.policy >= s.value - 1e-10)
    assert s.policy @ s.perturbed_rewards == pytest.approx(s.value, abs=1e-10)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_guarantee_thousands_of_feasible_perturbations_and_tight_at_worst_case(alpha):
    rng = np.random.default_rng(4)
    pi0, beta = np.full(6, 1 / 6), 5.0
    s = solve_single(REWARDS6, pi0, beta, alpha)
    dr = np.concatenate(
        [
            sample_feasible(4000, pi0, beta, alpha, rng),
            sample_feasible(4000, pi0, beta, alpha, rng, boundary=True),
        ]
    )
    assert np.all(is_feasible(dr, pi0, beta, alpha))
    perturbed = (REWARDS6 - dr) @ s.policy
    assert perturbed.min() >= s.value - 1e-12
    assert s.policy @ (REWARDS6 - s.perturbation) == pytest.approx(s.value, abs=1e-12)  # tight
    # the guarantee also holds for a policy that is not optimal, tight at its own dr_pi
    policy = rng.dirichlet(np.ones(6))
    objective = regularised_objective(policy, REWARDS6, pi0, beta, alpha)
    assert ((REWARDS6 - dr) @ policy).min() >= objective - 1e-12
    own = worst_case_perturbation(policy, pi0, beta, alpha)
    assert conjugate(own, pi0, beta, alpha) == pytest.approx(0.0, abs=1e-12)
    assert policy @ (REWARDS6 - own) == pytest.approx(objective, abs=1e-12)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_guarantee_breaks_just_outside_the_feasible_set(alpha):
    # the bound is tight, so a perturbation a little beyond the boundary violates it
    s = solve_single(REWARDS6, beta=5.0, alpha=alpha)
    beyond = s.perturbation + 1e-3
    assert not is_feasible(beyond, s.pi0, 5.0, alpha)
    assert s.policy @ (REWARDS6 - beyond) < s.value - 5e-4


def test_boundary_projection_and_shift_equivariance():
    rng = np.random.default_rng(5)
    pi0 = np.array([0.1, 0.6, 0.3])
    for alpha in ALPHAS:
        dr = rng.normal(size=(50, 3))
        np.testing.assert_allclose(
            conjugate(dr + 0.7, pi0, 2.0, alpha), conjugate(dr, pi0, 2.0, alpha) + 0.7, atol=1e-12
        )
        edge = project_to_boundary(dr, pi0, 2.0, alpha)
        np.testing.assert_allclose(conjugate(edge, pi0, 2.0, alpha), 0.0, atol=1e-12)
        assert conjugate(np.zeros(3), pi0, 2.0, alpha) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("alpha", [0.5, 2.0, 3.0, -1.0])
def test_unnormalised_set_is_smaller_and_excludes_the_worst_case(alpha):
    """Documents the convention: the conjugate over unnormalised measures gives a smaller set,
    which the worst case dr* (tight for the normalised one) lies outside of, for alpha != 1."""
    rng = np.random.default_rng(6)
    pi0, beta = np.full(6, 1 / 6), 2.0
    dr = rng.normal(scale=0.5, size=(3000, 6))
    inside_u = conjugate_unnormalised(dr, pi0, beta, alpha) <= 0
    assert inside_u.any()
    assert np.all(is_feasible(dr[inside_u], pi0, beta, alpha))
    s = solve_single(REWARDS6, pi0, beta, alpha)
    assert conjugate_unnormalised(s.perturbation, pi0, beta, alpha) > 1e-4
    assert conjugate_unnormalised(s.perturbation, pi0, beta, 1.0) != 0  # sanity: not trivially 0
    kl = solve_single(REWARDS6, pi0, beta, 1.0)
    assert conjugate_unnormalised(kl.perturbation, pi0, beta, 1.0) == pytest.approx(0.0, abs=1e-12)


def test_alpha_to_one_recovers_kl_linearly():
    rng = np.random.default_rng(7)
    rewards, pi0 = random_problem(rng, 6)
    beta = 3.0
    kl = solve_single(rewards, pi0, beta, 1.0)
    errors = {}
    for eps in [1e-3, 1e-4]:
        for alpha in [1 - eps, 1 + eps]:
            s = solve_single(rewards, pi0, beta, alpha)
            errors[alpha] = max(
                np.abs(s.policy - kl.policy).max(),
                abs(float(s.value - kl.value)),
                np.abs(s.perturbation - kl.perturbation).max(),
            )
            assert errors[alpha] < 50 * eps
            dr = rng.normal(size=(100, 6))
            np.testing.assert_allclose(
                conjugate(dr, pi0, beta, alpha), conjugate(dr, pi0, beta, 1.0), atol=50 * eps
            )
    for sign in [-1, 1]:  # first-order convergence: 10x closer alpha, about 10x smaller error
        ratio = errors[1 + sign * 1e-3] / errors[1 + sign * 1e-4]
        assert 7 < ratio < 13


# --- sequential ----------------------------------------------------------------------------------


def two_state_mdp():
    transitions = np.array([[[0.9, 0.1], [0.2, 0.8]], [[0.7, 0.3], [0.05, 0.95]]])  # P[s, a, s']
    rewards = np.array([[1.0, 0.0], [-0.5, 2.0]])
    return TabularMDP(transitions, rewards, 0.9, np.array([1.0, 0.0]))


@pytest.mark.parametrize("alpha", [1.0, 2.0, 0.5])
def test_two_state_mdp_matches_fsolve_and_brute_force_over_policies(alpha):
    mdp, beta = two_state_mdp(), 2.0
    sol = soft_value_iteration(mdp, beta=beta, alpha=alpha)
    assert sol.residual < 1e-10
    pi0 = np.full((2, 2), 0.5)
    root = fsolve(lambda v: soft_bellman(mdp, v, pi0, beta, alpha) - v, np.zeros(2), xtol=1e-13)
    np.testing.assert_allclose(sol.values, root, atol=1e-9)
    # brute force: exact regularised evaluation (a linear solve per policy) of a 201 x 201 grid of
    # policies (p(a0|s0), p(a0|s1)), then of finer grids around the best one (zooming 10x, 3 times)
    centre, width = np.array([0.5, 0.5]), 1.0
    for zoom in range(4):
        axes = [np.clip(np.linspace(c - width / 2, c + width / 2, 201), 0, 1) for c in centre]
        p, q = (a.ravel() for a in np.meshgrid(*axes))
        policies = np.stack([np.stack([p, 1 - p], -1), np.stack([q, 1 - q], -1)], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = regularised_policy_evaluation(mdp, policies, pi0, beta, alpha)  # (N, 2)
        values = np.where(np.isfinite(values), values, -np.inf)
        # no policy beats V* in any state (VI stops at a step <= 1e-12: V is within 1e-11 of V*)
        assert np.all(values <= sol.values + 1e-10)
        best = np.argmax(values.sum(axis=1))
        centre, width = np.array([p[best], q[best]]), width / 10
        if zoom == 0:
            assert np.all(values[best] >= sol.values - 1e-2)
    np.testing.assert_allclose(values[best], sol.values, atol=1e-9)
    np.testing.assert_allclose(centre, sol.policy[:, 0], atol=1e-4)
    np.testing.assert_allclose(
        regularised_policy_evaluation(mdp, sol.policy, pi0, beta, alpha), sol.values, atol=1e-10
    )


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_gridworld_value_iteration_converges_with_indifference(alpha):
    world = make_gridworld()
    for beta in [5.0, 100.0]:
        sol = soft_value_iteration(world.mdp, beta=beta, alpha=alpha)
        assert sol.residual < 1e-10
        # r - dr* + gamma E V* = V* on the support, dr* from the policy via the paper's formula
        dr = worst_case_perturbation(sol.policy, np.full(5, 0.2), beta, alpha)
        on = sol.policy > 1e-12
        gap = (sol.q - dr - sol.values[:, None])[on]
        assert np.abs(gap).max() < 1e-8
        np.testing.assert_allclose(conjugate(sol.perturbation, None, beta, alpha), 0.0, atol=1e-12)


def test_gridworld_is_a_valid_mdp_and_strong_regularisation_avoids_the_lava_edge():
    world = make_gridworld(slip=0.1, gamma=0.95)
    mdp = world.mdp
    np.testing.assert_allclose(mdp.transitions.sum(axis=-1), 1.0)
    assert mdp.n_states == 23 and mdp.n_actions == 5
    start = world.start
    # from the start, "right" enters the lava with probability 0.9 + 0.1/4
    assert mdp.rewards[start, 1] == pytest.approx(-(0.9 + 0.025))
    for s in np.flatnonzero(world.terminal):
        np.testing.assert_allclose(mdp.transitions[s, :, s], 1.0)
    edge = world.state(3, 0)  # above the start, next to the lava row's start
    strong = soft_value_iteration(mdp, beta=5.0)
    weak = soft_value_iteration(mdp, beta=100.0)
    assert strong.policy[edge].argmax() == 0  # up, away from the lava
    assert weak.policy[edge].argmax() == 1  # right, the short route along the lava
    assert occupancy(mdp, weak.policy).sum() == pytest.approx(1 / (1 - 0.95))


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_sequential_guarantee_for_random_feasible_perturbations(alpha):
    world = make_gridworld()
    mdp, beta = world.mdp, 10.0
    sol = soft_value_iteration(mdp, beta=beta, alpha=alpha)
    visits = occupancy(mdp, sol.policy)
    objective = sol.values[world.start]
    dr = sample_feasible(
        2000, np.full((mdp.n_states, 5), 0.2), beta, alpha, np.random.default_rng(8)
    )
    perturbed = ((sol.policy * (mdp.rewards - dr)).sum(-1) * visits).sum(-1)
    assert perturbed.min() >= objective - 1e-9
    # tight at dr*: the perturbed return equals V*(start); exact evaluation with r - dr*
    tight = policy_evaluation(mdp, sol.policy, mdp.rewards - sol.perturbation)[world.start]
    assert tight == pytest.approx(objective, abs=1e-9)


# --- verifier ------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", ALPHAS)
def test_verifier_minimum_equals_the_regularised_objective(alpha):
    rng = np.random.default_rng(9)
    pi0, beta = np.full(6, 1 / 6), 5.0
    s = solve_single(REWARDS6, pi0, beta, alpha)
    for policy in [s.policy, rng.dirichlet(np.ones(6))]:
        check = verify_single(policy, REWARDS6, pi0, beta, alpha, n_samples=2000)
        assert check.holds
        assert abs(check.gap) < 1e-7  # SLSQP finds the worst case the theory predicts
        assert check.sampled_minimum >= check.objective - 1e-12
        assert is_feasible(check.argmin, pi0, beta, alpha)
        assert policy @ (REWARDS6 - check.argmin) == pytest.approx(check.minimum, abs=1e-12)
    # for a full-support policy the argmin is dr_pi itself
    policy = rng.dirichlet(np.ones(6) * 3)
    check = verify_single(policy, REWARDS6, pi0, beta, alpha, n_samples=100)
    own = worst_case_perturbation(policy, pi0, beta, alpha)
    np.testing.assert_allclose(check.argmin, own, atol=1e-4)


def test_verifier_on_the_gridworld():
    world = make_gridworld()
    sol = soft_value_iteration(world.mdp, beta=20.0, alpha=2.0)
    check = verify_mdp(world.mdp, sol.policy, beta=20.0, alpha=2.0, n_samples=300)
    assert check.objective == pytest.approx(sol.values[world.start], abs=1e-9)
    assert check.holds and abs(check.gap) < 1e-7
    assert check.argmin.shape == world.mdp.rewards.shape
    assert check.sampled_minimum > check.optimised_minimum  # sampling alone is far off in 115-D


# --- VALT-SOFT link ---------------------------------------------------------------------------


def test_soft_worst_adversary_is_the_kl_dual():
    rng = np.random.default_rng(10)
    values, lam = rng.normal(size=32), 0.3
    prior = rng.dirichlet(np.ones(32))
    adv = soft_worst_adversary(values, lam, prior)
    nu = prior * np.exp(-values / lam)
    np.testing.assert_allclose(adv.nu, nu / nu.sum(), rtol=1e-12)
    assert adv.value == pytest.approx(-lam * np.log(prior @ np.exp(-values / lam)), abs=1e-12)
    kl = adv.nu @ np.log(adv.nu / prior)
    assert adv.value == pytest.approx(adv.expected_value + lam * kl, abs=1e-12)
    # guarantee for the adversary: E_nu[V + delta] <= soft-worst value when E_p exp(delta/lam) <= 1
    delta = sample_feasible(3000, prior, 1 / lam, 1.0, rng)
    assert np.all((values + delta) @ adv.nu <= adv.value + 1e-12)
    np.testing.assert_allclose(values + adv.decision.perturbation, adv.value, atol=1e-12)


# --- bad inputs, CLI, docs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: solve_single([1.0, 2.0], beta=0.0), "beta"),
        (lambda: solve_single([1.0, 2.0], beta=-1.0), "-1.0"),
        (lambda: solve_single([1.0, 2.0], beta=float("inf")), "beta"),
        (lambda: solve_single([1.0, 2.0], beta=float("nan")), "beta"),
        (lambda: solve_single([1.0, 2.0], alpha=0.0), "alpha = 0"),
        (lambda: solve_single([1.0, 2.0], alpha=float("nan")), "alpha"),
        (lambda: solve_single([1.0, float("nan")]), "rewards must be finite"),
        (lambda: solve_single([1.0, float("inf")]), "rewards must be finite"),
        (lambda: solve_single([]), "rewards is empty"),
        (lambda: solve_single([1.0, 2.0], pi0=[0.6, 0.6]), "sum to 1"),
        (lambda: solve_single([1.0, 2.0], pi0=[1.2, -0.2]), "-0.2"),
        (lambda: solve_single([1.0, 2.0], pi0=[1.0, 0.0]), "> 0"),
        (lambda: solve_single([1.0, 2.0], pi0=[0.2, 0.3, 0.5]), "3 actions"),
        (lambda: verify_single([0.5, 0.6], [1.0, 2.0]), "policy must sum to 1"),
        (lambda: soft_worst_adversary([1.0, 2.0], lam=0.0), "lambda"),
        (lambda: make_gridworld(slip=1.5), "slip"),
        (lambda: make_gridworld(gamma=1.0), "gamma"),
        (lambda: make_gridworld(layout=["S.X"]), "'X'"),
        (
            lambda: TabularMDP(
                np.full((2, 2, 2), 0.6), np.zeros((2, 2)), 0.9, np.array([1.0, 0.0])
            ),
            "transitions",
        ),
    ],
)
def test_bad_inputs_raise_one_line_config_errors(call, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        call()
    assert "\n" not in str(info.value)


def theory_cli(argv):
    parser = argparse.ArgumentParser(prog="robustrl")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser(sub)
    args = parser.parse_args(["theory", *argv])
    return args.func(args)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["single", "--beta", "1,-2"], "-2"),
        (["single", "--rewards", "1,x"], "'x'"),
        (["single", "--alpha", "0"], "alpha = 0"),
        (["single", "--pi0", "0.5,0.5"], "2 actions"),
        (["feasible", "--rewards", "1,2,3"], "exactly 2"),
        (["gridworld", "--gamma", "1.5"], "gamma"),
        (["verify", "--beta", "0"], "beta"),
        (["verify", "--policy", "0.5,0.5"], "policy"),
        (["verify", "--gridworld", "--policy", "0.5,0.5"], "optimal or uniform"),
    ],
)
def test_cli_bad_input(argv, message, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(message)):
        theory_cli([*argv, *(["--out", str(tmp_path)] if argv[0] != "verify" else [])])


def test_cli_all_writes_every_figure(tmp_path, capsys):
    theory_cli(["all", "--out", str(tmp_path)])
    names = {p.name for p in tmp_path.iterdir()}
    expected = {
        "single_kl.png",
        "single_alpha2.png",
        "feasible_kl.png",
        "feasible_alphas.png",
        "gridworld_kl.png",
        "gridworld_alpha2.png",
        "README.md",
    }
    assert names == expected
    for name in expected - {"README.md"}:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    readme = (tmp_path / "README.md").read_text()
    assert all(name in readme for name in expected - {"README.md"})
    assert "Bellman residual" in capsys.readouterr().out


def test_cli_verify_reports_the_guarantee(capsys):
    theory_cli(["verify", "--alpha", "2", "--policy", "uniform", "--samples", "200"])
    out = capsys.readouterr().out
    assert "guarantee holds" in out and "tightest perturbation" in out


def test_cli_verify_fails_loudly_when_the_guarantee_is_violated(monkeypatch):
    from robustrl.theory import verify

    real = verify.verify_single

    def broken(*args, **kwargs):  # a verifier whose objective is overstated must be reported
        check = real(*args, **kwargs)
        return verify.GuaranteeCheck(**{**check.__dict__, "gap": -1.0})

    monkeypatch.setattr(verify, "verify_single", broken)
    with pytest.raises(RobustRLError, match="guarantee failed"):
        theory_cli(["verify", "--samples", "50"])


def test_docs_examples_run():
    text = (Path(__file__).parents[1] / "docs" / "THEORY.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 4
    for block in blocks:
        exec(compile(block, "docs/THEORY.md", "exec"), {})
