"""Robustness tables across runs, in the layout of the main paper's Table 1.

One row per evaluated agent (env, method, seed, eps), columns: natural return, each attack,
and the worst case across attacks; cells ``mean +- std``. Inputs are run directories (their
``eval/attacks.json``) or ``attacks.json`` files (e.g. of SB3 agents).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from robustrl.attacks import attack_names
from robustrl.errors import ConfigError


def load_record(path: Path) -> tuple[str, str, dict[str, Any]]:
    """(method, seed, record) for a run directory or an attacks.json file."""
    path = Path(path)
    file = path / "eval" / "attacks.json" if path.is_dir() else path
    if not file.is_file():
        hint = f"; run `robustrl attack {path}` first" if path.is_dir() else ""
        raise ConfigError(f"no attack results at {file}{hint}")
    try:
        record = json.loads(file.read_text())
        record["results"]["none"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{file} is not an attacks.json written by robustrl attack ({exc!r})"
        ) from None
    method, seed = record.get("victim", "?"), str(record.get("seed", "?"))
    config_file = path / "config.json" if path.is_dir() else None
    if config_file is not None and config_file.is_file():
        config = json.loads(config_file.read_text()).get("config", {})
        method, seed = config.get("algo", method).upper(), str(config.get("seed", seed))
    return method, seed, record


def build_report(
    paths: list[Path], out_dir: Path, title: str = "Robustness under observation attacks"
) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.png`` to ``out_dir``; return their paths."""
    if not paths:
        raise ConfigError("report needs at least one run directory or attacks.json")
    entries = [load_record(p) for p in paths]
    seen = {name for _, _, rec in entries for name in rec["results"] if name != "none"}
    order = [n for n in attack_names() if n in seen] + sorted(seen - set(attack_names()))

    def cell(rec: dict[str, Any], name: str) -> str:
        r = rec["results"].get(name)
        return "-" if r is None else f"{r['mean']:.0f} +- {r['std']:.0f}"

    header = ["env", "method", "seed", "eps", "natural", *order, "worst"]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, seed, rec in entries:
        worst = rec["worst"]
        eps = rec["eps"] if isinstance(rec["eps"], float | int) else "per-dim"
        row = [
            rec["env"],
            method,
            seed,
            str(eps),
            cell(rec, "none"),
            *(cell(rec, n) for n in order),
        ]
        row.append(f"**{worst['mean']:.0f}** ({worst['attack']})")
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        f"Returns over {entries[0][2]['episodes']} episodes per cell (mean +- std); worst = lowest mean across attacks.",
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "report.md"
    md.write_text("\n".join(lines) + "\n")
    png = out_dir / "report.png"
    _plot(entries, order, png, title)
    return md, png


def _plot(entries, order, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    columns = ["none", *order]
    width = 0.8 / len(columns)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(entries) + 3), 4.2))
    x = np.arange(len(entries))
    for j, name in enumerate(columns):
        means = [rec["results"].get(name, {}).get("mean", np.nan) for _, _, rec in entries]
        stds = [rec["results"].get(name, {}).get("std", 0.0) for _, _, rec in entries]
        ax.bar(
            x + (j - (len(columns) - 1) / 2) * width,
            means,
            width,
            yerr=stds,
            capsize=2,
            label="natural" if name == "none" else name,
        )
    ax.set_xticks(x, [f"{rec['env']}\n{m} s{s}" for m, s, rec in entries], fontsize=8)
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
