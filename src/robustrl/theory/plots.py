"""Figures of the theory module (matplotlib, Agg backend): single decision, feasible sets, grid world."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402
from matplotlib.patches import Polygon, Rectangle  # noqa: E402

from robustrl.theory.divergences import is_kl  # noqa: E402
from robustrl.theory.feasible import feasible_grid  # noqa: E402
from robustrl.theory.gridworld import MOVES, GridWorld  # noqa: E402
from robustrl.theory.mdp import soft_value_iteration  # noqa: E402
from robustrl.theory.single import solve_single  # noqa: E402


def regulariser_name(alpha: float) -> str:
    """``KL`` or ``alpha=2`` for titles and file names."""
    return "KL" if is_kl(alpha) else f"alpha={alpha:g}"


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_single(
    rewards: np.ndarray,
    betas: Sequence[float],
    path: str | Path,
    alpha: float = 1.0,
    pi0: np.ndarray | None = None,
) -> Path:
    """One row per strength: rewards, policy (pi0 dashed), worst-case dr*, perturbed rewards r - dr*."""
    rewards = np.asarray(rewards, dtype=float)
    actions = np.arange(len(rewards))
    labels = [f"a{i + 1}" for i in actions]
    solved = [solve_single(rewards, pi0, beta, alpha) for beta in betas]
    fig, axes = plt.subplots(len(betas), 4, figsize=(14, 2.9 * len(betas)), squeeze=False)
    low = min(min(s.perturbed_rewards.min(), s.rewards.min()) for s in solved)
    high = max(max(s.perturbed_rewards.max(), s.rewards.max()) for s in solved)
    pad = 0.08 * (high - low)
    dr_max = max(np.abs(s.perturbation).max() for s in solved) * 1.1
    for row, s in zip(axes, solved):
        row[0].bar(actions, s.rewards, color="0.5")
        row[0].set_ylabel(f"1/beta = {1 / s.beta:g}\n(beta = {s.beta:g})")
        row[0].set_title("rewards r(a) (= Q-values)")
        row[1].bar(actions, s.policy, color="tab:blue")
        row[1].step(
            np.r_[actions - 0.5, actions[-1] + 0.5],
            np.r_[s.pi0, s.pi0[-1]],
            where="post",
            color="k",
            ls="--",
            lw=1,
            label="pi0",
        )
        row[1].set_ylim(0, 1.05)
        row[1].set_title("regularised policy pi*(a)")
        row[1].legend(loc="upper right", fontsize=8)
        colors = np.where(s.perturbation >= 0, "tab:red", "tab:green")
        row[2].bar(actions, s.perturbation, color=colors)
        row[2].axhline(0, color="k", lw=0.8)
        row[2].set_ylim(-dr_max, dr_max)
        row[2].set_title("worst-case perturbation dr*(a)")
        row[3].bar(actions, s.perturbed_rewards, color="tab:purple")
        row[3].axhline(float(s.value), color="k", ls="--", lw=1, label=f"V* = {float(s.value):.3f}")
        row[3].set_ylim(low - pad, high + pad)
        row[3].set_title("perturbed rewards r - dr*")
        row[3].legend(loc="lower right", fontsize=8)
        for ax in row:
            ax.set_xticks(actions, labels)
            ax.grid(axis="y", alpha=0.3)
        row[0].set_ylim(low - pad, high + pad)
    fig.suptitle(
        f"Single decision, {regulariser_name(alpha)} regulariser: the imagined adversary "
        "(indifference: r - dr* = V* on the policy's support)"
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return _save(fig, path)


def _feasible_panel(ax, rewards, pi0, beta, alpha, lim, color="tab:red", label=None, fill=True):
    x = np.linspace(lim[0], lim[1], 401)
    values = feasible_grid(pi0, beta, alpha, x, x)
    if fill:
        ax.contourf(x, x, values, levels=[-np.inf, 0.0], colors=[color], alpha=0.25)
    ax.contour(x, x, values, levels=[0.0], colors=[color], linewidths=1.5)
    s = solve_single(rewards, pi0, beta, alpha)
    ax.plot(*s.perturbation, "*", color=color, ms=14, mec="k", label=label or "worst case dr*")
    return s


def plot_feasible_sets(
    rewards: np.ndarray,
    betas: Sequence[float],
    path: str | Path,
    alpha: float = 1.0,
    pi0: np.ndarray | None = None,
    lim: tuple[float, float] = (-2.5, 1.5),
) -> Path:
    """For two actions: the feasible set R (shaded), 0 and dr* marked, the supporting line at dr*."""
    rewards = np.asarray(rewards, dtype=float)
    pi0 = np.full(2, 0.5) if pi0 is None else np.asarray(pi0, dtype=float)
    fig, axes = plt.subplots(1, len(betas), figsize=(4.6 * len(betas), 4.8), squeeze=False)
    for ax, beta in zip(axes[0], betas):
        s = _feasible_panel(ax, rewards, pi0, beta, alpha, lim)
        ax.plot(0, 0, "o", color="tab:blue", ms=8, mec="k", label="unperturbed (0, 0)")
        # supporting line {dr : <pi*, dr> = <pi*, dr*>}: every feasible dr lies below it
        x = np.array(lim)
        p1, p2 = s.policy
        if p2 > 1e-12:
            level = float(s.policy @ s.perturbation)
            ax.plot(x, (level - p1 * x) / p2, "k--", lw=1, label="<pi*, dr> = <pi*, dr*>")
        ax.set_xlim(lim)
        ax.set_ylim(lim)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.set_xlabel("dr(a1)")
        ax.set_ylabel("dr(a2)")
        ax.set_title(
            f"1/beta = {1 / beta:g}: pi* = ({p1:.2f}, {p2:.2f})\ndr* = ({s.perturbation[0]:.2f}, {s.perturbation[1]:.2f})"
        )
        ax.legend(loc="lower left", fontsize=7)
    fig.suptitle(
        f"Feasible reward perturbations (red), {regulariser_name(alpha)}, r = ({rewards[0]:g}, {rewards[1]:g}), "
        f"pi0 = ({pi0[0]:g}, {pi0[1]:g})"
    )
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return _save(fig, path)


def plot_feasible_alphas(
    rewards: np.ndarray,
    alphas: Sequence[float],
    path: str | Path,
    beta: float = 1.0,
    pi0: np.ndarray | None = None,
    lim: tuple[float, float] = (-2.5, 1.5),
) -> Path:
    """Boundaries of the two-action feasible set for several alphas at one strength, with dr*."""
    rewards = np.asarray(rewards, dtype=float)
    pi0 = np.full(2, 0.5) if pi0 is None else np.asarray(pi0, dtype=float)
    fig, ax = plt.subplots(figsize=(5.6, 5.4))
    colors = plt.cm.viridis(np.linspace(0.0, 0.9, len(alphas)))
    for alpha, color in zip(alphas, colors):
        _feasible_panel(
            ax,
            rewards,
            pi0,
            beta,
            alpha,
            lim,
            color=color,
            label=f"{regulariser_name(alpha)}",
            fill=False,
        )
    ax.plot(0, 0, "o", color="tab:blue", ms=8, mec="k", label="unperturbed (0, 0)")
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.set_xlabel("dr(a1)")
    ax.set_ylabel("dr(a2)")
    ax.legend(loc="lower left", fontsize=8, title="boundary and dr* (stars)")
    ax.set_title(
        f"Feasible-set boundaries, 1/beta = {1 / beta:g}, r = ({rewards[0]:g}, {rewards[1]:g}), "
        f"pi0 = ({pi0[0]:g}, {pi0[1]:g})",
        fontsize=9,
    )
    fig.tight_layout()
    return _save(fig, path)


def _draw_cells(ax, world: GridWorld) -> None:
    rows, cols = world.shape
    for i in range(rows):
        for j in range(cols):
            char = world.layout[i][j]
            face = {"#": "0.2", "G": "palegreen", "L": "lightsalmon", "S": "lightyellow"}.get(
                char, "white"
            )
            ax.add_patch(
                Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=face, edgecolor="0.6", lw=0.8)
            )
            if char in "GLS":
                ax.text(
                    j + 0.36, i - 0.33, char, ha="center", va="center", fontsize=8, weight="bold"
                )
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_policy(ax, world: GridWorld, policy: np.ndarray) -> None:
    _draw_cells(ax, world)
    for s, (i, j) in enumerate(world.cells):
        if world.terminal[s]:
            continue
        # stay: a disc whose area is proportional to pi(stay|s), under the arrows
        ax.add_patch(
            plt.Circle((j, i), 0.3 * np.sqrt(policy[s, 4]), color="tab:orange", alpha=0.6, zorder=2)
        )
        for a, (di, dj) in enumerate(MOVES[:4]):
            length = 0.47 * policy[s, a]
            if length > 0.01:
                ax.arrow(
                    j,
                    i,
                    dj * length,
                    di * length,
                    width=0.03,
                    head_width=0.11,
                    head_length=min(0.09, length),
                    length_includes_head=True,
                    color="tab:blue",
                    zorder=3,
                )


def _draw_perturbation(ax, world: GridWorld, dr: np.ndarray, norm) -> plt.cm.ScalarMappable:
    _draw_cells(ax, world)
    cmap = plt.get_cmap("RdBu_r")
    for s, (i, j) in enumerate(world.cells):
        if world.terminal[s]:
            continue
        centre = np.array([j, i], dtype=float)
        corners = {"tl": (-0.5, -0.5), "tr": (0.5, -0.5), "br": (0.5, 0.5), "bl": (-0.5, 0.5)}
        triangles = [
            ("tl", "tr"),
            ("tr", "br"),
            ("br", "bl"),
            ("bl", "tl"),
        ]  # up, right, down, left
        for a, (c1, c2) in enumerate(triangles):
            points = [centre, centre + corners[c1], centre + corners[c2]]
            ax.add_patch(Polygon(points, facecolor=cmap(norm(dr[s, a])), edgecolor="0.7", lw=0.4))
        ax.add_patch(
            Rectangle(
                (j - 0.14, i - 0.14),
                0.28,
                0.28,
                facecolor=cmap(norm(dr[s, 4])),
                edgecolor="k",
                lw=0.5,
            )
        )
    return plt.cm.ScalarMappable(norm=norm, cmap=cmap)


def plot_gridworld(
    world: GridWorld,
    betas: Sequence[float],
    path: str | Path,
    alpha: float = 1.0,
) -> Path:
    """Top row: the regularised policy (arrows: moves, orange disc: stay); bottom row: dr*(s, a)
    per cell (triangles: up/right/down/left, centre square: stay), one column per strength."""
    fig, axes = plt.subplots(2, len(betas), figsize=(4.4 * len(betas), 8.6), squeeze=False)
    for col, beta in enumerate(betas):
        result = soft_value_iteration(world.mdp, beta=beta, alpha=alpha)
        _draw_policy(axes[0, col], world, result.policy)
        axes[0, col].set_title(
            f"1/beta = {1 / beta:g}: policy\nV*(start) = {result.values[world.start]:.3f}"
        )
        live = result.perturbation[~world.terminal]
        live = live[np.isfinite(live)]
        # separate scales below and above 0 (the colour bar shows both), so the small positive
        # perturbations of likely actions stay visible next to the large negative ones
        norm = TwoSlopeNorm(
            vcenter=0.0, vmin=min(float(live.min()), -1e-9), vmax=max(float(live.max()), 1e-9)
        )
        mappable = _draw_perturbation(axes[1, col], world, result.perturbation, norm)
        axes[1, col].set_title(f"1/beta = {1 / beta:g}: worst-case dr*(s, a)")
        bar = fig.colorbar(mappable, ax=axes[1, col], fraction=0.046, pad=0.03)
        ticks = [norm.vmin, norm.vmin / 2, 0.0, norm.vmax / 2, norm.vmax]
        bar.set_ticks(ticks, labels=[f"{t:.2g}" for t in ticks])
    fig.suptitle(
        f"Grid world ({regulariser_name(alpha)}, gamma = {world.mdp.gamma:g}, slip = {world.slip:g}): "
        "soft-optimal policy and the imagined adversary's reward perturbation"
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return _save(fig, path)
