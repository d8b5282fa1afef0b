"""The robustness evaluation: a victim under the clean condition and every attack, worst case.

``evaluate_robustness`` runs the clean evaluation and each named attack (fitting learned ones
first, and keeping the worst of an attack's variants) on the same episode seeds, and returns the
record written to ``eval/attacks.json``::

    {"eps": 0.15, "episodes": 20, "env": "Hopper-v5", "victim": "...",
     "results": {"none": {"mean": .., "std": .., "min": .., "returns": [..]}, "random": {...}},
     "worst": {"attack": "pgd-minq", "mean": ..}}

``eps_sweep`` repeats it over several budgets and draws return against eps per attack.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym

from robustrl.attacks import make_attack
from robustrl.attacks.action import ACTION_ATTACKS, make_action_attack
from robustrl.attacks.base import FitContext
from robustrl.errors import ConfigError
from robustrl.evaluation import EvalResult, rollout
from robustrl.threat import ActionBall, ObservationBall
from robustrl.views import PolicyView


def _summary(result: EvalResult) -> dict[str, Any]:
    return {
        "mean": result.mean,
        "std": result.std,
        "min": result.min,
        "max": result.max,
        "returns": result.returns,
        "lengths": result.lengths,
    }


def evaluate_robustness(
    view: PolicyView,
    make_env: Callable[[], gym.Env],
    attacks: Sequence[str],
    ball: ObservationBall,
    episodes: int = 20,
    seed: int = 0,
    settings: dict[str, dict[str, Any]] | None = None,
    budget: int | None = None,
    cache_dir: Path | None = None,
    deterministic: bool = True,
    n_envs: int = 8,
    progress: bool = True,
    log: Callable[[str], None] = print,
    action_ball: ActionBall | None = None,
) -> dict[str, Any]:
    """Clean and attacked returns of ``view`` on the same ``episodes`` seeds, and the worst attack.

    ``attacks`` may mix observation attacks (bounded by ``ball``) and action attacks (``a-*``,
    bounded by ``action_ball``); both go through the same rollout and the same worst case.
    """
    settings = settings or {}
    results: dict[str, Any] = {}
    start = time.perf_counter()
    clean = rollout(view, make_env, episodes, deterministic=deterministic, seed=seed, n_envs=n_envs)
    results["none"] = {**_summary(clean), "seconds": time.perf_counter() - start}
    log(f"  none      {clean.mean:10.1f} +- {clean.std:.1f}")
    for name in attacks:
        is_action = name in ACTION_ATTACKS
        if is_action:
            if action_ball is None:
                raise ConfigError(f"action attack {name!r} needs an action budget (--action-eps)")
            attack = make_action_attack(name, view, action_ball, settings.get(name), seed=seed)
        else:
            attack = make_attack(name, view, ball, settings.get(name), seed=seed)
        start = time.perf_counter()
        context = FitContext(
            make_env, budget=budget, cache_dir=cache_dir, seed=seed, progress=progress
        )
        fit_info = attack.fit(context)
        worst: tuple[EvalResult, str] | None = None
        variants = {}
        for variant in attack.variants():
            threat = (
                {"action_perturb": variant.perturb, "action_ball": action_ball}
                if is_action
                else {"perturb": variant.perturb, "ball": ball, "on_episode_end": variant.reset}
            )
            result = rollout(
                view,
                make_env,
                episodes,
                deterministic=deterministic,
                seed=seed,
                n_envs=n_envs,
                **threat,
            )
            variants[variant.label] = result.mean
            if worst is None or result.mean < worst[0].mean:
                worst = (result, variant.label)
        assert worst is not None
        record = {**_summary(worst[0]), "seconds": time.perf_counter() - start}
        if len(variants) > 1:
            record.update(worst_variant=worst[1], variants=variants)
        if fit_info:
            record["fit"] = fit_info
        results[name] = record
        log(f"  {name:9s} {worst[0].mean:10.1f} +- {worst[0].std:.1f}")
    attacked = {k: v for k, v in results.items() if k != "none"}
    worst_name = min(attacked, key=lambda k: attacked[k]["mean"]) if attacked else "none"
    return {
        "eps": ball.eps if isinstance(ball.eps, float) else list(ball.eps),
        "action_eps": action_ball.eps if action_ball is not None else None,
        "episodes": episodes,
        "env": view.env_id,
        "victim": view.kind,
        "seed": seed,
        "deterministic": deterministic,
        "results": results,
        "worst": {"attack": worst_name, "mean": results[worst_name]["mean"]},
    }


def format_table(record: dict[str, Any]) -> str:
    """Plain-text table: attack, mean, std, min; the worst attack marked."""
    worst = record["worst"]["attack"]
    lines = [f"{'attack':<12}{'mean':>11}{'std':>10}{'min':>11}", "-" * 44]
    for name, r in record["results"].items():
        mark = "  <- worst" if name == worst and name != "none" else ""
        variant = f"  [{r['worst_variant']}]" if "worst_variant" in r else ""
        lines.append(
            f"{name:<12}{r['mean']:>11.1f}{r['std']:>10.1f}{r['min']:>11.1f}{mark}{variant}"
        )
    return "\n".join(lines)


def eps_sweep(
    run: Callable[[float], dict[str, Any]],
    eps_values: Sequence[float],
    out_csv: Path,
    out_png: Path,
) -> list[dict[str, Any]]:
    """Run ``run(eps)`` for each eps; write return-vs-eps rows (CSV) and a plot (PNG)."""
    records = [run(float(eps)) for eps in eps_values]
    rows = [
        {"eps": rec["eps"], "attack": name, "mean": r["mean"], "std": r["std"]}
        for rec in records
        for name, r in rec["results"].items()
    ]
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with out_csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["eps", "attack", "mean", "std"])
        writer.writeheader()
        writer.writerows(rows)
    plot_sweep(rows, out_png, title=f"{records[0]['env']}: return under attack vs eps")
    return records


def plot_sweep(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name in dict.fromkeys(r["attack"] for r in rows):
        pts = sorted(
            (float(r["eps"]), float(r["mean"]), float(r["std"]))
            for r in rows
            if r["attack"] == name
        )
        xs, ms, ss = zip(*pts, strict=True)
        ax.errorbar(
            xs, ms, yerr=ss, marker="o", capsize=3, label="clean" if name == "none" else name
        )
    ax.set_xlabel("eps (normalised observation units)")
    ax.set_ylabel("episode return (mean +- std)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
