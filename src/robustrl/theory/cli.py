"""``robustrl theory ...``: figures and checks of policy regularisation as an imagined adversary.

Registered by the main CLI through ``add_parser(sub)``; every sub-subcommand sets ``func``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from robustrl.errors import ConfigError, RobustRLError

SINGLE_REWARDS = "0.4,1.0,0.2,0.8,-0.3,0.6"
SINGLE_BETAS = "1,5,50"
FEASIBLE_REWARDS = "1,0.5"
FEASIBLE_BETAS = "0.5,2,10"
FEASIBLE_ALPHAS = "-1,0.5,1,2,5"
GRID_BETAS = "5,20,100"
DEFAULT_OUT = "docs/results/theory"


def _floats(text: str, name: str) -> np.ndarray:
    """Parse ``"1,2.5,-3"``; a ConfigError names the flag and the bad item."""
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if not items:
        raise ConfigError(f"{name} needs comma-separated numbers, got {text!r}")
    values = []
    for item in items:
        try:
            values.append(float(item))
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not a number") from None
    return np.array(values)


def _tag(alpha: float) -> str:
    from robustrl.theory.divergences import is_kl

    return "kl" if is_kl(alpha) else f"alpha{alpha:g}"


def _fmt(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in np.ravel(values)) + "]"


def _pi0(text: str | None) -> np.ndarray | None:
    return None if text is None else _floats(text, "--pi0")


def _single(args: argparse.Namespace) -> list[Path]:
    from robustrl.theory.plots import plot_single
    from robustrl.theory.single import solve_single
    from robustrl.theory.validation import check_alpha

    rewards = _floats(args.rewards, "--rewards")
    betas = _floats(args.beta, "--beta")
    pi0 = _pi0(args.pi0)
    alpha = check_alpha(args.alpha)
    print(f"single decision, rewards {_fmt(rewards)}, alpha {alpha:g}")
    for beta in betas:
        s = solve_single(rewards, pi0, beta, alpha)
        error = np.max(np.abs(s.perturbed_rewards - s.value)[s.support])
        print(
            f"  1/beta = {1 / beta:g}: V* = {float(s.value):.6f}, pi* = {_fmt(s.policy)}, "
            f"dr* = {_fmt(s.perturbation)}, max |r - dr* - V*| on support = {error:.1e}"
        )
    path = plot_single(rewards, betas, Path(args.out) / f"single_{_tag(alpha)}.png", alpha, pi0)
    print(f"wrote {path}")
    return [path]


def _feasible(args: argparse.Namespace) -> list[Path]:
    from robustrl.theory.plots import plot_feasible_alphas, plot_feasible_sets
    from robustrl.theory.validation import check_alpha

    rewards = _floats(args.rewards, "--rewards")
    if rewards.shape != (2,):
        raise ConfigError(
            f"--rewards must give exactly 2 actions for the 2-D plot, got {len(rewards)}"
        )
    betas = _floats(args.beta, "--beta")
    pi0 = _pi0(args.pi0)
    alpha = check_alpha(args.alpha)
    # validate everything (pi0, betas) before drawing
    from robustrl.theory.single import solve_single

    for beta in betas:
        solve_single(rewards, pi0, beta, alpha)
    out = Path(args.out)
    paths = [plot_feasible_sets(rewards, betas, out / f"feasible_{_tag(alpha)}.png", alpha, pi0)]
    if args.alphas:
        alphas = [check_alpha(a) for a in _floats(args.alphas, "--alphas")]
        beta = float(betas[len(betas) // 2]) if args.alphas_beta is None else args.alphas_beta
        solve_single(rewards, pi0, beta, 1.0)
        paths.append(plot_feasible_alphas(rewards, alphas, out / "feasible_alphas.png", beta, pi0))
    for path in paths:
        print(f"wrote {path}")
    return paths


def _gridworld(args: argparse.Namespace) -> list[Path]:
    from robustrl.theory.gridworld import make_gridworld
    from robustrl.theory.mdp import soft_value_iteration
    from robustrl.theory.plots import plot_gridworld
    from robustrl.theory.validation import check_alpha

    world = make_gridworld(slip=args.slip, gamma=args.gamma)
    betas = _floats(args.beta, "--beta")
    alpha = check_alpha(args.alpha)
    print(
        f"grid world {world.shape[0]}x{world.shape[1]}, {world.mdp.n_states} states, "
        f"gamma {world.mdp.gamma:g}, slip {world.slip:g}, alpha {alpha:g}"
    )
    for beta in betas:
        result = soft_value_iteration(world.mdp, beta=beta, alpha=alpha)
        print(
            f"  1/beta = {1 / beta:g}: V*(start) = {result.values[world.start]:.6f}, "
            f"{result.iterations} iterations, Bellman residual {result.residual:.1e}"
        )
    path = plot_gridworld(world, betas, Path(args.out) / f"gridworld_{_tag(alpha)}.png", alpha)
    print(f"wrote {path}")
    return [path]


def _verify(args: argparse.Namespace) -> None:
    from robustrl.theory.validation import check_alpha, check_beta
    from robustrl.theory.verify import verify_mdp, verify_single

    beta, alpha = check_beta(args.beta), check_alpha(args.alpha)
    if args.samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {args.samples}")
    if args.gridworld:
        from robustrl.theory.gridworld import make_gridworld
        from robustrl.theory.mdp import soft_value_iteration

        world = make_gridworld()
        if args.policy == "optimal":
            policy = soft_value_iteration(world.mdp, beta=beta, alpha=alpha).policy
        elif args.policy == "uniform":
            policy = np.full(world.mdp.rewards.shape, 1.0 / world.mdp.n_actions)
        else:
            raise ConfigError(
                f"--policy for --gridworld must be optimal or uniform, got {args.policy!r}"
            )
        check = verify_mdp(world.mdp, policy, None, beta, alpha, args.samples, args.seed)
        where = "grid world (from the start cell)"
    else:
        from robustrl.theory.single import solve_single

        rewards = _floats(args.rewards, "--rewards")
        pi0 = _pi0(args.pi0)
        solved = solve_single(rewards, pi0, beta, alpha)
        if args.policy == "optimal":
            policy = solved.policy
        elif args.policy == "uniform":
            policy = np.full(rewards.shape, 1.0 / rewards.size)
        else:
            policy = _floats(args.policy, "--policy")
        check = verify_single(policy, rewards, pi0, beta, alpha, args.samples, args.seed)
        where = f"single decision, rewards {_fmt(rewards)}"
    print(f"{where}, {args.policy} policy, 1/beta = {1 / beta:g}, alpha = {alpha:g}")
    print(check.summary())
    if check.argmin.ndim == 1:
        print(f"tightest perturbation: {_fmt(check.argmin)}")
    if not check.holds:
        raise RobustRLError(f"the guarantee failed numerically: gap {check.gap:.3g}")


README = """# Policy regularisation as an imagined adversary: figures

Made by `{command}` (module `robustrl.theory`, see `docs/THEORY.md`).

| file | what it shows |
|---|---|
| `single_kl.png` | One decision, six actions (rewards {single_rewards}), uniform pi0, KL regulariser at 1/beta = {single_strengths}: rewards, the regularised policy, the worst-case reward perturbation dr*, and the perturbed rewards r - dr*, all equal to V* (indifference). Stronger regularisation: more stochastic policy, lower V*. |
| `single_alpha2.png` | The same with the alpha = 2 divergence (chi^2 / 2): sparse policies; r - dr* equals V* on the support and is below it off the support. |
| `feasible_kl.png` | Two actions (rewards {feasible_rewards}, pi0 = (0.5, 0.5)), KL, 1/beta = {feasible_strengths}: the feasible set of perturbations (red), the unperturbed point (0, 0) and dr* (both on the boundary), and the line <pi*, dr> = <pi*, dr*> that supports the set at dr* (the guarantee: every feasible dr lies below it). Weaker regularisation shrinks the set towards the quadrant dr <= 0. |
| `feasible_alphas.png` | Boundaries of the two-action feasible set for alpha in {{{alphas}}} at 1/beta = 1, with each dr*. (For two actions and uniform pi0, alpha = 2 and alpha = 3 give the same divergence, (2p - 1)^2 / 2, hence 5 rather than 3 in the list.) |
| `gridworld_kl.png` | The 5x5 grid world (start S, goal G +1, lava L -1, walls, slip 0.1, gamma 0.95), KL, 1/beta = {grid_strengths}: the soft-optimal policy (arrows, orange disc: stay) and dr*(s, a) per cell (triangles up/right/down/left, centre square: stay). The adversary lowers rewards of unlikely actions (into the lava) and raises those of likely ones. At the strongest regularisation the agent leaves the lava edge upwards. |
| `gridworld_alpha2.png` | The same with alpha = 2. |
"""


def _all(args: argparse.Namespace) -> None:
    out = Path(args.out)
    common = dict(out=str(out), pi0=None)
    _single(argparse.Namespace(rewards=SINGLE_REWARDS, beta=SINGLE_BETAS, alpha=1.0, **common))
    _single(argparse.Namespace(rewards=SINGLE_REWARDS, beta=SINGLE_BETAS, alpha=2.0, **common))
    _feasible(
        argparse.Namespace(
            rewards=FEASIBLE_REWARDS,
            beta=FEASIBLE_BETAS,
            alpha=1.0,
            alphas=FEASIBLE_ALPHAS,
            alphas_beta=1.0,
            **common,
        )
    )
    for alpha in (1.0, 2.0):
        _gridworld(
            argparse.Namespace(beta=GRID_BETAS, alpha=alpha, slip=0.1, gamma=0.95, out=str(out))
        )

    def strengths(betas: str) -> str:
        return ", ".join(f"{1 / b:g}" for b in _floats(betas, "beta"))

    readme = README.format(
        command=f"robustrl theory all --out {args.out}",
        single_rewards=SINGLE_REWARDS.replace(",", ", "),
        single_strengths=strengths(SINGLE_BETAS),
        feasible_rewards="(" + FEASIBLE_REWARDS.replace(",", ", ") + ")",
        feasible_strengths=strengths(FEASIBLE_BETAS),
        alphas=FEASIBLE_ALPHAS.replace(",", ", "),
        grid_strengths=strengths(GRID_BETAS),
    )
    (out / "README.md").write_text(readme)
    print(f"wrote {out / 'README.md'}")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``theory`` and its sub-subcommands on the main CLI's subparsers."""
    theory = subparsers.add_parser(
        "theory",
        help="policy regularisation as an imagined reward adversary (figures, checks)",
        description=(
            "Brekelmans et al. 2022: the KL / alpha-divergence regularised policy is optimal "
            "against an imagined adversary that perturbs rewards within a feasible set. "
            "Regulariser strength is 1/beta; alpha = 1 is KL."
        ),
    )
    sub = theory.add_subparsers(dest="theory_command", required=True, metavar="SUBCOMMAND")

    def out_flag(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--out", default=DEFAULT_OUT, help=f"figure folder (default {DEFAULT_OUT})"
        )

    def reg_flags(parser: argparse.ArgumentParser, betas: str, many: bool = True) -> None:
        parser.add_argument(
            "--beta",
            default=betas,
            help=f"inverse strength(s) beta > 0, comma-separated (default {betas})"
            if many
            else f"inverse strength beta > 0 (default {betas})",
            type=str if many else float,
        )
        parser.add_argument(
            "--alpha", type=float, default=1.0, help="alpha-divergence (1 = KL, the default; not 0)"
        )

    single = sub.add_parser("single", help="one decision: policy, dr*, perturbed rewards (figure)")
    single.add_argument(
        "--rewards", default=SINGLE_REWARDS, help=f"comma-separated (default {SINGLE_REWARDS})"
    )
    single.add_argument("--pi0", help="base policy, comma-separated (default uniform)")
    reg_flags(single, SINGLE_BETAS)
    out_flag(single)
    single.set_defaults(func=_single)

    feasible = sub.add_parser("feasible", help="two-action feasible sets of perturbations (figure)")
    feasible.add_argument(
        "--rewards", default=FEASIBLE_REWARDS, help=f"two rewards (default {FEASIBLE_REWARDS})"
    )
    feasible.add_argument("--pi0", help="base policy over the two actions (default 0.5,0.5)")
    reg_flags(feasible, FEASIBLE_BETAS)
    feasible.add_argument(
        "--alphas", help=f"also overlay these alphas' boundaries, e.g. {FEASIBLE_ALPHAS}"
    )
    feasible.add_argument(
        "--alphas-beta", type=float, help="beta of the --alphas figure (default: middle --beta)"
    )
    out_flag(feasible)
    feasible.set_defaults(func=_feasible)

    grid = sub.add_parser("gridworld", help="soft value iteration on the 5x5 grid world (figure)")
    reg_flags(grid, GRID_BETAS)
    grid.add_argument(
        "--slip", type=float, default=0.1, help="probability of a random move (default 0.1)"
    )
    grid.add_argument("--gamma", type=float, default=0.95, help="discount in [0, 1) (default 0.95)")
    out_flag(grid)
    grid.set_defaults(func=_gridworld)

    verify = sub.add_parser("verify", help="check the robustness guarantee numerically")
    verify.add_argument(
        "--rewards",
        default=SINGLE_REWARDS,
        help=f"single decision rewards (default {SINGLE_REWARDS})",
    )
    verify.add_argument("--pi0", help="base policy (default uniform)")
    reg_flags(verify, "5", many=False)
    verify.add_argument(
        "--policy",
        default="optimal",
        help="optimal (default), uniform, or comma-separated probabilities (single decision only)",
    )
    verify.add_argument("--gridworld", action="store_true", help="verify on the grid world instead")
    verify.add_argument(
        "--samples", type=int, default=5000, help="random boundary points (default 5000)"
    )
    verify.add_argument("--seed", type=int, default=0)
    verify.set_defaults(func=_verify)

    everything = sub.add_parser("all", help="write every figure and a README.md to --out")
    out_flag(everything)
    everything.set_defaults(func=_all)
    return theory
