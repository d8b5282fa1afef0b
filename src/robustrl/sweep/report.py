"""The sweep report: the paper's protocol over a finished (or partly finished) sweep directory.

Per (env, method, eps):

- **median seed** (the paper's protocol, its App. D.3): the seed whose natural return is the
  median of the method's seeds (with an even number of seeds, the lower of the two middle ones;
  ties broken by seed); its natural return and each attack's return, ``mean +- std`` over the
  evaluation episodes, and the worst case (lowest mean) across attacks;
- **across seeds**: the mean +- std (population) over seeds of each seed's mean return, for the
  natural return, each attack and the worst case;
- **paper**: Table 1 of the main paper (``paper_table1.yaml``) beside our median seed, where the
  env (any version: the paper used MuJoCo -v2), the method and the eps match.

A seed's natural return is the clean return in its attack records (``none``, the same episodes
as the attacks); a sweep without attack cells uses each run's last clean evaluation
(``evaluations.csv``) instead. Split attack cells of one victim and eps are merged.

Written to ``SWEEP_DIR/report/`` (or ``--out``): ``report.md``, ``report.html`` (tables and
plots), ``summary.csv`` (long format: one row per env, method, eps, attack), ``seeds.csv`` (every
seed's returns), ``cells.csv`` (state, attempts and duration of every cell), and the plots
``training_curves.png`` (clean evaluation return vs env steps, mean +- std across seeds, per
method), ``eps_curves.png`` (return vs eps per attack, when the sweep has several eps) and
``natural_vs_worst.png``.
"""

from __future__ import annotations

import csv
import html
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from robustrl.errors import ConfigError
from robustrl.sweep.runner import load_sweep
from robustrl.sweep.state import SweepDir

# Our attack name -> the paper's Table 1 column (our SA-RL / PA-AD attackers are trained with SAC).
PAPER_ATTACKS = {
    "none": "natural",
    "random": "random",
    "mad": "mad",
    "pgd-minq": "pgd-minq",
    "rs": "rs",
    "sa-rl": "sa-rl(sac)",
    "pa-ad": "pa-ad(sac)",
}


def load_paper_table() -> dict[str, Any]:
    """The paper's Table 1 (off-policy rows): ``{"eps": {env: eps}, "rows": {env: {algo: ...}}}``."""
    text = (resources.files("robustrl.sweep") / "paper_table1.yaml").read_text()
    return yaml.safe_load(text)


def env_base(env_id: str) -> str:
    """``Hopper-v5`` -> ``Hopper`` (the key of the paper's table)."""
    return env_id.split("/")[-1].split("-")[0]


# ---------------------------------------------------------------- collecting results


@dataclass
class Group:
    """One (env, method): each seed's merged results per eps, its natural return, curves."""

    env: str
    algo: str
    seeds: list[int] = field(default_factory=list)
    results: dict[int, dict[float, dict[str, dict]]] = field(default_factory=dict)
    natural: dict[int, float] = field(default_factory=dict)  # seed -> natural return
    natural_std: dict[int, float] = field(default_factory=dict)
    run_dirs: dict[int, Path] = field(default_factory=dict)

    @property
    def eps(self) -> list[float]:
        return sorted({e for by_eps in self.results.values() for e in by_eps})

    def median_seed(self) -> int | None:
        if not self.natural:
            return None
        ranked = sorted(self.natural, key=lambda s: (self.natural[s], s))
        return ranked[(len(ranked) - 1) // 2]


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def collect(root: Path) -> tuple[dict[str, Any], list[Group], list[dict[str, Any]]]:
    """(sweep.json, groups in grid order, one row per cell with its state)."""
    sweep_dir = SweepDir(root)
    sweep = load_sweep(root)
    cells = sweep["cells"]
    groups: dict[tuple[str, str], Group] = {}
    cell_rows = []
    train_done = set()
    for cell in cells:
        state = sweep_dir.read(cell["id"])
        cell_rows.append(
            {
                "id": cell["id"],
                "kind": cell["kind"],
                "status": state.status if state else "pending",
                "attempts": state.attempts if state else 0,
                "seconds": round(state.seconds, 2) if state and state.seconds else "",
                "total_seconds": round(state.total_seconds, 2) if state else "",
                "error": (state.error or "") if state else "",
            }
        )
        group = groups.setdefault((cell["env"], cell["algo"]), Group(cell["env"], cell["algo"]))
        done = state is not None and state.status == "done"
        if cell["kind"] == "train":
            group.run_dirs[cell["seed"]] = sweep_dir.run_dir(cell["id"])
            if done:
                train_done.add(cell["id"])
            continue
        path = sweep_dir.record_path(cell["id"])
        if not done or not path.is_file():
            continue
        record = json.loads(path.read_text())
        merged = group.results.setdefault(cell["seed"], {}).setdefault(float(cell["eps"]), {})
        merged.update(record["results"])
    has_attacks = any(c["kind"] == "attack" for c in cells)
    for group in groups.values():
        if has_attacks:
            for seed, by_eps in group.results.items():
                clean = by_eps[min(by_eps)]["none"]
                group.natural[seed], group.natural_std[seed] = clean["mean"], clean["std"]
        else:  # a training-only sweep: the last clean evaluation of each finished run
            for seed, run_dir in group.run_dirs.items():
                rows = _read_csv(run_dir / "evaluations.csv")
                if rows and run_dir.name in train_done:
                    group.natural[seed] = float(rows[-1]["mean"])
                    group.natural_std[seed] = float(rows[-1]["std"])
        group.seeds = sorted(group.natural)
    return sweep, list(groups.values()), cell_rows


def attack_order(groups: list[Group]) -> list[str]:
    from robustrl.attacks import attack_names
    from robustrl.attacks.action import ACTION_ATTACKS

    seen = {
        name
        for g in groups
        for by_eps in g.results.values()
        for results in by_eps.values()
        for name in results
        if name != "none"
    }
    known = [*attack_names(), *ACTION_ATTACKS]
    return [n for n in known if n in seen] + sorted(seen - set(known))


def _worst(results: dict[str, dict]) -> tuple[str, dict] | None:
    attacked = {k: v for k, v in results.items() if k != "none"}
    if not attacked:
        return None
    name = min(attacked, key=lambda k: attacked[k]["mean"])
    return name, attacked[name]


# ---------------------------------------------------------------- tables


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


def _pm(mean: float, std: float) -> str:
    return f"{mean:.0f} +- {std:.0f}"


def _mean_std(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    return float(np.mean(values)), float(np.std(values))


def summary_rows(groups: list[Group], order: list[str], paper: dict) -> list[dict[str, Any]]:
    """The long-format rows of ``summary.csv`` (also the source of every table)."""
    rows = []
    for g in groups:
        median = g.median_seed()
        eps_values: list[float | None] = g.eps or [None]
        paper_row = paper["rows"].get(env_base(g.env), {}).get(g.algo)
        paper_eps = paper["eps"].get(env_base(g.env))
        for eps in eps_values:
            per_seed = (
                {s: g.results.get(s, {}).get(eps, {}) for s in g.seeds} if eps is not None else {}
            )
            match = paper_row is not None and eps is not None and math.isclose(eps, paper_eps)
            for attack in ["natural", *(order if eps is not None else []), "worst"]:
                row: dict[str, Any] = {
                    "env": g.env,
                    "method": g.algo,
                    "eps": "" if eps is None else eps,
                    "attack": attack,
                    "median_seed": "" if median is None else median,
                    "n_seeds": len(g.seeds),
                }
                if attack == "natural":
                    values = [g.natural[s] for s in g.seeds]
                    if median is not None:
                        row.update(median_mean=g.natural[median], median_std=g.natural_std[median])
                elif attack == "worst":
                    worsts = {s: _worst(r) for s, r in per_seed.items()}
                    values = [w[1]["mean"] for w in worsts.values() if w]
                    w = worsts.get(median)
                    if w:
                        row.update(
                            median_mean=w[1]["mean"], median_std=w[1]["std"], worst_attack=w[0]
                        )
                else:
                    values = [r[attack]["mean"] for r in per_seed.values() if attack in r]
                    r = per_seed.get(median, {}).get(attack)
                    if r:
                        row.update(median_mean=r["mean"], median_std=r["std"])
                stats = _mean_std(values)
                if stats:
                    row.update(seeds_mean=stats[0], seeds_std=stats[1], n_seeds=len(values))
                key = attack if attack in ("natural", "worst") else PAPER_ATTACKS.get(attack)
                if match and key in paper_row["returns"]:
                    mean, std = paper_row["returns"][key]
                    row.update(paper_mean=mean, paper_std=std)
                if "median_mean" in row or "seeds_mean" in row:
                    rows.append(row)
    return rows


def build_tables(
    groups: list[Group], order: list[str], rows: list[dict], paper: dict
) -> list[Table]:
    def lookup(g: Group, eps, attack: str) -> dict | None:
        for row in rows:
            if (row["env"], row["method"], row["eps"], row["attack"]) == (
                g.env,
                g.algo,
                eps,
                attack,
            ):
                return row
        return None

    def cell(row: dict | None, prefix: str) -> str:
        if row is None or f"{prefix}_mean" not in row:
            return "-"
        return _pm(row[f"{prefix}_mean"], row[f"{prefix}_std"])

    has_eps = any(g.eps for g in groups)
    columns = ["natural", *order, "worst"]
    median_rows, seeds_rows = [], []
    for g in groups:
        for eps in g.eps or [""]:
            worst = lookup(g, eps, "worst")
            worst_text = cell(worst, "median")
            if worst and "worst_attack" in worst:
                worst_text = f"**{worst_text}** ({worst['worst_attack']})"
            med = g.median_seed()
            median_rows.append(
                [g.env, g.algo, f"{eps:g}" if eps != "" else "-", "-" if med is None else str(med)]
                + [cell(lookup(g, eps, c), "median") for c in columns[:-1]]
                + [worst_text]
            )
            seeds_rows.append(
                [g.env, g.algo, f"{eps:g}" if eps != "" else "-", str(len(g.seeds))]
                + [cell(lookup(g, eps, c), "seeds") for c in columns]
            )
    natural_note = (
        "natural = clean return on the attacks' episodes"
        if has_eps
        else "natural = last clean evaluation of the run (evaluations.csv)"
    )
    tables = [
        Table(
            "Median seed (paper protocol)",
            ["env", "method", "eps", "seed", *columns],
            median_rows,
            f"The seed whose natural return is the median of the method's seeds; cells are mean +- std "
            f"over its evaluation episodes; worst = the lowest mean across attacks; {natural_note}.",
        ),
        Table(
            "Across seeds",
            ["env", "method", "eps", "seeds", *columns],
            seeds_rows,
            "Mean +- std (population) across seeds of each seed's mean return; worst = each seed's "
            "worst attack, averaged.",
        ),
    ]
    paper_columns = ["natural", *[a for a in order if a in PAPER_ATTACKS], "worst"]
    paper_rows = []
    for g in groups:
        entry = paper["rows"].get(env_base(g.env), {}).get(g.algo)
        paper_eps = paper["eps"].get(env_base(g.env))
        for eps in g.eps:
            if entry is None or not math.isclose(eps, paper_eps):
                continue
            ours = [cell(lookup(g, eps, c), "median") for c in paper_columns]
            theirs = []
            for c in paper_columns:
                key = c if c in ("natural", "worst") else PAPER_ATTACKS[c]
                value = entry["returns"].get(key)
                theirs.append(_pm(*value) if value else "-")
            paper_rows.append([g.env, g.algo, f"ours, median seed {g.median_seed()}", *ours])
            label = f"paper: {entry['label']}, {entry['steps']} steps, -v2"
            paper_rows.append([env_base(g.env), g.algo, label, *theirs])
    if paper_rows:
        tables.append(
            Table(
                "Beside the paper's Table 1",
                ["env", "method", "source", *paper_columns],
                paper_rows,
                "Paper: median of 8 seeds, 20 episodes, MuJoCo -v2; its worst is over all its "
                "attacks, including SA-RL / PA-AD attackers trained with PPO, which we do not run. "
                "Our sa-rl / pa-ad are its SA-RL (SAC) / PA-AD (SAC). The paper's row is the "
                "variant in its Table 1 (+reg. = with the SA regulariser), which may differ from "
                "the preset we trained with.",
            )
        )
    return tables


def _markdown_table(table: Table) -> list[str]:
    lines = [f"## {table.title}", ""]
    lines.append("| " + " | ".join(table.header) + " |")
    lines.append("|" + "---|" * len(table.header))
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    if table.note:
        lines += ["", table.note]
    return [*lines, ""]


def _html_table(table: Table) -> str:
    def fmt(text: str) -> str:
        text = html.escape(text)
        if text.startswith("**"):
            bold, _, rest = text[2:].partition("**")
            return f"<b>{bold}</b>{rest}"
        return text

    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{fmt(c)}</td>" for c in row) + "</tr>" for row in table.rows
    )
    note = f"<p class='note'>{html.escape(table.note)}</p>" if table.note else ""
    return f"<h2>{html.escape(table.title)}</h2><table><tr>{head}</tr>{body}</table>{note}"


# ---------------------------------------------------------------- plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(n: int, ncols: int = 3):
    plt = _plt()
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.0 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return plt, fig, list(axes.flat)


def _curve(run_dir: Path) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(steps, returns, source) of one run: clean evaluations, else training episode returns."""
    rows = _read_csv(run_dir / "evaluations.csv")
    if rows:
        return (
            np.array([float(r["step"]) for r in rows]),
            np.array([float(r["mean"]) for r in rows]),
            "clean evaluation return",
        )
    rows = [r for r in _read_csv(run_dir / "metrics.csv") if r.get("episode_return")]
    if rows:
        return (
            np.array([float(r["step"]) for r in rows]),
            np.array([float(r["episode_return"]) for r in rows]),
            "training episode return",
        )
    return None


def plot_training_curves(groups: list[Group], path: Path) -> bool:
    envs = list(dict.fromkeys(g.env for g in groups))
    curves: dict[str, list] = {env: [] for env in envs}
    for g in groups:
        runs = [c for c in (_curve(d) for d in g.run_dirs.values()) if c is not None]
        if runs:
            curves[g.env].append((g.algo, runs))
    if not any(curves.values()):
        return False
    plt, fig, axes = _grid(len(envs))
    for ax, env in zip(axes, envs):
        ylabel = "return"
        for algo, runs in curves[env]:
            n = min(len(steps) for steps, _, _ in runs)  # runs may be at different points
            steps = runs[0][0][:n]
            values = np.stack([r[1][:n] for r in runs])
            mean, std = values.mean(0), values.std(0)
            line = ax.plot(steps, mean, label=f"{algo} ({len(runs)} seeds)")[0]
            ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
            ylabel = runs[0][2]
        ax.set_title(env)
        ax.set_xlabel("environment steps")
        ax.set_ylabel(f"{ylabel} (mean +- std)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_eps_curves(groups: list[Group], order: list[str], path: Path) -> bool:
    swept = [g for g in groups if len(g.eps) > 1]
    if not swept:
        return False
    plt, fig, axes = _grid(len(swept), ncols=4)
    for ax, g in zip(axes, swept):
        for attack in ["none", *order]:
            xs, means, stds = [], [], []
            for eps in g.eps:
                values = [
                    g.results[s][eps][attack]["mean"]
                    for s in g.seeds
                    if attack in g.results.get(s, {}).get(eps, {})
                ]
                if values:
                    xs.append(eps)
                    means.append(np.mean(values))
                    stds.append(np.std(values))
            if xs:
                label = "natural" if attack == "none" else attack
                ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label)
        ax.set_title(f"{g.env} {g.algo}")
        ax.set_xlabel("eps (normalised units)")
        ax.set_ylabel("return (mean +- std across seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_natural_vs_worst(groups: list[Group], rows: list[dict], path: Path) -> bool:
    envs = [
        e
        for e in dict.fromkeys(g.env for g in groups)
        if any(g.seeds for g in groups if g.env == e)
    ]
    if not envs:
        return False
    plt, fig, axes = _grid(len(envs))
    for ax, env in zip(axes, envs):
        env_groups = [g for g in groups if g.env == env and g.seeds]
        eps_values = sorted({e for g in env_groups for e in g.eps})
        bars = [("natural", None)] + [("worst", e) for e in eps_values]
        width = 0.8 / len(bars)
        x = np.arange(len(env_groups))
        for j, (attack, eps) in enumerate(bars):
            means, stds, paper = [], [], []
            for g in env_groups:
                row = next(
                    (
                        r
                        for r in rows
                        if (r["env"], r["method"], r["attack"]) == (env, g.algo, attack)
                        and (eps is None or r["eps"] == eps)
                    ),
                    None,
                )
                means.append(row.get("median_mean", np.nan) if row else np.nan)
                stds.append(row.get("median_std", 0.0) if row else 0.0)
                paper.append(row.get("paper_mean", np.nan) if row else np.nan)
            offset = x + (j - (len(bars) - 1) / 2) * width
            label = "natural" if eps is None else f"worst, eps {eps:g}"
            ax.bar(offset, means, width, yerr=stds, capsize=2, label=label)
            if not np.all(np.isnan(paper)):
                ax.scatter(
                    offset,
                    paper,
                    marker="D",
                    color="black",
                    s=18,
                    zorder=3,
                    label="paper" if j == 0 else None,
                )
        ax.set_xticks(x, [g.algo for g in env_groups], fontsize=8, rotation=20)
        ax.set_title(f"{env}: median seed")
        ax.set_ylabel("episode return")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---------------------------------------------------------------- report


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


SUMMARY_COLUMNS = [
    "env", "method", "eps", "attack", "median_seed", "median_mean", "median_std", "worst_attack",
    "seeds_mean", "seeds_std", "n_seeds", "paper_mean", "paper_std",
]  # fmt: skip


def build_sweep_report(root: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    """Write the report of the sweep directory ``root`` (default ``root/report``); return the
    paths written, by kind (``md``, ``html``, ``csv``, plots)."""
    root = Path(root)
    sweep, groups, cell_rows = collect(root)
    out = Path(out) if out is not None else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    paper = load_paper_table()
    order = attack_order(groups)
    rows = summary_rows(groups, order, paper)
    if not rows:
        raise ConfigError(
            f"{root}: no finished cells to report yet ({len(cell_rows)} cells; run `robustrl sweep` first)"
        )
    tables = build_tables(groups, order, rows, paper)
    written = {"csv": out / "summary.csv", "seeds": out / "seeds.csv", "cells": out / "cells.csv"}
    _write_csv(written["csv"], rows, SUMMARY_COLUMNS)
    seed_rows = [
        {
            "env": g.env,
            "method": g.algo,
            "seed": s,
            "eps": eps,
            "attack": a,
            "mean": r["mean"],
            "std": r["std"],
        }
        for g in groups
        for s in g.seeds
        for eps, results in sorted(g.results.get(s, {}).items())
        for a, r in results.items()
    ]
    _write_csv(
        written["seeds"], seed_rows, ["env", "method", "seed", "eps", "attack", "mean", "std"]
    )
    _write_csv(written["cells"], cell_rows, list(cell_rows[0]))
    plots = {
        "training": (
            out / "training_curves.png",
            plot_training_curves(groups, out / "training_curves.png"),
        ),
        "eps": (out / "eps_curves.png", plot_eps_curves(groups, order, out / "eps_curves.png")),
        "bars": (
            out / "natural_vs_worst.png",
            plot_natural_vs_worst(groups, rows, out / "natural_vs_worst.png"),
        ),
    }
    figures = [(k, p) for k, (p, ok) in plots.items() if ok]
    written.update(figures)

    status = {}
    for row in cell_rows:
        status[row["status"]] = status.get(row["status"], 0) + 1
    counts = ", ".join(f"{n} {s}" for s, n in sorted(status.items()))
    failed = [r for r in cell_rows if r["status"] == "failed"]
    title = f"Sweep {sweep['name']}: robustness report"
    intro = [
        f"Sweep directory `{root}` ({len(cell_rows)} cells: {counts}); spec `sweep.yaml`.",
        "eps in the agent's normalised observation units. Per-cell durations: `cells.csv`; every "
        "seed's returns: `seeds.csv`; all numbers: `summary.csv`.",
    ]
    captions = {
        "training": "Training curves (mean +- std across seeds)",
        "eps": "Return vs eps (mean +- std across seeds)",
        "bars": "Natural vs worst case, median seed (diamonds: the paper)",
    }
    md = [f"# {title}", "", *intro, ""]
    for table in tables:
        md += _markdown_table(table)
    if failed:
        md += ["## Failed cells", ""] + [f"- `{r['id']}`: {r['error']}" for r in failed] + [""]
    for kind, path in figures:
        md += [f"![{captions[kind]}]({path.name})", ""]
    written["md"] = out / "report.md"
    written["md"].write_text("\n".join(md))

    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:0.85em;margin-bottom:0.5em}"
        "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
        "td:nth-child(-n+4),th{text-align:left}.note{color:#555;font-size:0.85em}"
        "img{max-width:100%}"
    )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
    ]
    parts += [f"<p>{html.escape(p)}</p>" for p in intro]
    parts += [_html_table(t) for t in tables]
    if failed:
        items = "".join(
            f"<li><code>{html.escape(r['id'])}</code>: {html.escape(r['error'])}</li>"
            for r in failed
        )
        parts.append(f"<h2>Failed cells</h2><ul>{items}</ul>")
    for kind, path in figures:
        parts.append(f"<h2>{html.escape(captions[kind])}</h2><img src='{path.name}' alt='{kind}'>")
    parts.append("</body></html>")
    written["html"] = out / "report.html"
    written["html"].write_text("\n".join(parts))
    return written
