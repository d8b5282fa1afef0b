"""The sweep directory: its layout and one state file per cell.

Layout::

    SWEEP_DIR/
      sweep.yaml           the spec as given (the latest run's)
      sweep.json           name, resolved cells, resources: what `robustrl report` reads
      sweep.log            one line per event, appended across runs
      cells/ID.json        each cell's state (below)
      runs/ID/             train cells' run directories (robustrl train), with attack_cache/
      attacks/ID.json      attack cells' records (the JSON `robustrl attack --json` writes)
      report/              written by `robustrl report SWEEP_DIR`

A state file says where a cell is: ``pending`` (never started), ``running``, ``done``,
``failed`` (with its error and traceback) or ``interrupted`` (Ctrl-C, SIGTERM, a lost worker),
plus attempts and timings. Every write goes to a temporary file renamed into place, so a state
file is always complete, also on a shared filesystem read by other nodes. Re-running a sweep
skips ``done`` cells and runs the others again: train cells resume from their last checkpoint.

Each state records its cell's fingerprint (a hash of the cell's definition); a sweep directory
refuses a spec that changes a cell it already has, so results never silently mix settings.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from robustrl.checkpoint import write_json
from robustrl.errors import ConfigError

STATUSES = ("pending", "running", "done", "failed", "interrupted")
STOP_FILE = ".stopping"  # present while a sweep stops: cells starting then stop at once


def fingerprint(cell: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(cell, sort_keys=True).encode()).hexdigest()[:16]


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


@dataclass
class CellState:
    """Where one cell is. ``seconds`` is the last attempt's duration, ``total_seconds`` all of
    them; ``result`` holds what the cell reports (run directory, final return, worst attack)."""

    id: str
    kind: str
    fingerprint: str
    status: str = "pending"
    attempts: int = 0
    error: str | None = None
    traceback: str | None = None
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    total_seconds: float = 0.0
    host: str | None = None
    pid: int | None = None
    result: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class SweepDir:
    """Paths inside a sweep directory, and reading/writing its cell states."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def spec_json(self) -> Path:
        return self.root / "sweep.json"

    @property
    def log_file(self) -> Path:
        return self.root / "sweep.log"

    @property
    def stop_file(self) -> Path:
        return self.root / STOP_FILE

    def state_path(self, cell_id: str) -> Path:
        return self.root / "cells" / f"{cell_id}.json"

    def run_dir(self, train_id: str) -> Path:
        return self.root / "runs" / train_id

    def record_path(self, attack_id: str) -> Path:
        return self.root / "attacks" / f"{attack_id}.json"

    def read(self, cell_id: str) -> CellState | None:
        path = self.state_path(cell_id)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise TypeError(f"expected a JSON object, got {type(data).__name__}")
            state = CellState.from_dict(data)
            counts = {"attempts": state.attempts, "total_seconds": state.total_seconds}
            for key, value in counts.items():
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise TypeError(f"{key} must be a number >= 0, got {value!r}")
            if state.status not in STATUSES:
                raise TypeError(f"unknown status {state.status!r}")
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"corrupt cell state {path}: {exc}; delete it to rerun the cell"
            ) from None
        state.attempts = int(state.attempts)
        return state

    def write(self, state: CellState) -> None:
        if state.status not in STATUSES:
            raise ValueError(f"unknown cell status {state.status!r}")
        write_json(self.state_path(state.id), state.to_dict())

    def read_spec(self) -> dict[str, Any] | None:
        if not self.spec_json.is_file():
            return None
        try:
            return json.loads(self.spec_json.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"corrupt sweep file {self.spec_json}: {exc}") from None

    def log(self, line: str) -> None:
        with self.log_file.open("a") as f:
            f.write(f"{now()} {line}\n")


def is_sweep_dir(path: str | Path) -> bool:
    return (Path(path) / "sweep.json").is_file()
