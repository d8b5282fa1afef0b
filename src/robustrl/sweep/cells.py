"""Running one cell of a sweep: the function every executor calls, in a worker process or a
Ray task.

``run_cell(root, cell, threads)`` marks the cell ``running`` in its state file, runs it, and
marks it ``done``, ``failed`` (any exception: the error is recorded, the sweep goes on) or
``interrupted`` (SIGINT / SIGTERM / Ray cancellation: a train cell checkpoints first). It
returns the final state as a dict and never raises for a cell's own failure, so one bad cell
cannot take the sweep down.

- A train cell is ``robustrl train`` into ``runs/ID``; when that folder already has a checkpoint
  (an earlier attempt was interrupted or its worker died) it continues it with
  ``robustrl.resume``; a folder without one is an attempt that died before its first checkpoint
  and starts over.
- An attack cell loads its train cell's newest checkpoint and runs ``evaluate_robustness``, as
  ``robustrl attack`` does, writing the same record to ``attacks/ID.json``. Learned attackers and
  Robust Sarsa critics are cached in the victim's ``attack_cache/`` and reused by later attempts.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from robustrl.sweep.state import CellState, SweepDir, fingerprint, now


def _interrupt_once(signum, frame):
    """SIGINT while a cell runs: raise KeyboardInterrupt once, then ignore further SIGINTs, so a
    second Ctrl-C (or the coordinator's own signal) cannot cut the checkpoint being written."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


ORPHAN_GRACE_S = 120.0  # how long an orphaned worker waits for its cell's checkpoint
_cell_running = threading.Event()


def init_worker() -> None:
    """Worker initializer. Idle workers ignore Ctrl-C (the coordinator decides what stops).
    A worker never outlives its coordinator, however that dies (kill -9 included): a watchdog
    thread notices the new parent and interrupts the running cell (it checkpoints and is
    recorded ``interrupted``, as on Ctrl-C), then exits; an idle worker exits at once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int, poll_s: float = 0.5) -> None:
    while os.getppid() == parent:
        time.sleep(poll_s)
    if _cell_running.is_set():
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + ORPHAN_GRACE_S
        while _cell_running.is_set() and time.monotonic() < deadline:
            time.sleep(poll_s)
    os._exit(1)


def run_cell(root: str, cell: dict[str, Any], threads: int = 1) -> dict[str, Any]:
    """Run ``cell`` of the sweep in ``root``; return its final state (a dict)."""
    import torch

    torch.set_num_threads(threads)
    sweep = SweepDir(root)
    previous = sweep.read(cell["id"])
    state = CellState(id=cell["id"], kind=cell["kind"], fingerprint=fingerprint(cell))
    if previous is not None:
        state.attempts, state.total_seconds = previous.attempts, previous.total_seconds
    state.status, state.attempts, state.started = "running", state.attempts + 1, now()
    state.host, state.pid = socket.gethostname(), os.getpid()
    sweep.write(state)
    _cell_running.set()
    main_thread = threading.current_thread() is threading.main_thread()
    handler = signal.signal(signal.SIGINT, _interrupt_once) if main_thread else None
    start = time.perf_counter()
    try:
        if sweep.stop_file.exists():  # the sweep is stopping: this cell started too late
            raise KeyboardInterrupt
        runner = train_cell if cell["kind"] == "train" else attack_cell
        state.result = runner(sweep, cell)
        state.status, state.error, state.traceback = "done", None, None
    except KeyboardInterrupt:
        state.status, state.error = (
            "interrupted",
            "interrupted; it continues when the sweep is re-run",
        )
    except Exception as exc:
        state.status = "failed"
        state.error = " ".join(f"{type(exc).__name__}: {exc}".split())
        state.traceback = traceback.format_exc()
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, handler)
    state.seconds = time.perf_counter() - start
    state.total_seconds += state.seconds
    state.finished = now()
    sweep.write(state)
    _cell_running.clear()
    return state.to_dict()


# ---------------------------------------------------------------- train


def last_row(path: Path) -> dict[str, str] | None:
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return rows[-1] if rows else None


def train_cell(sweep: SweepDir, cell: dict[str, Any]) -> dict[str, Any]:
    import robustrl
    from robustrl import checkpoint, runlock
    from robustrl.sweep.spec import config_for

    config = config_for(cell)
    run_dir = sweep.run_dir(cell["id"])
    resumed_from = None
    pointer = run_dir / "checkpoints" / "latest.json"
    # the run's lock: a live process still training this cell (an orphan of a killed
    # coordinator, another sweep on the same directory) makes this attempt fail, not corrupt it
    with runlock.locked(run_dir, "training"):
        if pointer.is_file():
            resumed_from = int(checkpoint.read_json(pointer).get("step", 0))
            if resumed_from < config.steps:
                robustrl.resume(run_dir, save_buffer=cell["save_buffer"], progress=False)
        else:
            for path in run_dir.iterdir():  # an attempt that died before its first checkpoint
                if path.name != runlock.LOCK_NAME:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
            robustrl.train(
                config,
                out=run_dir.parent,
                name=run_dir.name,
                save_buffer=cell["save_buffer"],
                progress=False,
            )
    result: dict[str, Any] = {"run_dir": str(run_dir), "steps": config.steps}
    if resumed_from is not None:
        result["resumed_from"] = resumed_from
    final = last_row(run_dir / "evaluations.csv")
    if final is not None:
        result["final_eval"] = float(final["mean"])
    return result


# ---------------------------------------------------------------- attack


def attack_cell(sweep: SweepDir, cell: dict[str, Any]) -> dict[str, Any]:
    from robustrl.attacks import ATTACKS, resolve_names
    from robustrl.checkpoint import write_json
    from robustrl.config import OAConfig
    from robustrl.envs import make_env
    from robustrl.errors import ConfigError
    from robustrl.robustness import evaluate_robustness
    from robustrl.threat import ActionBall, ObservationBall
    from robustrl.views import load_view

    run_dir = sweep.run_dir(cell["train"])
    view = load_view(run_dir)
    names = resolve_names(",".join(cell["attacks"]), view)
    learned = [n for n in names if n in ATTACKS and ATTACKS[n].learned]
    if learned and cell["budget"] is None:
        raise ConfigError(f"{', '.join(learned)} need attack.budget (environment steps)")
    action_names = [n for n in names if n.startswith("a-")]
    action_eps = cell["action_eps"] if cell["action_eps"] is not None else OAConfig.action_eps
    env_kwargs = getattr(view, "env_kwargs", {})
    record = evaluate_robustness(
        view,
        lambda: make_env(view.env_id, **env_kwargs),
        names,
        ObservationBall(cell["eps"]),
        episodes=cell["episodes"],
        seed=cell["attack_seed"],
        settings=cell["settings"],
        budget=cell["budget"],
        cache_dir=run_dir / "attack_cache",
        deterministic=True,
        n_envs=cell["n_envs"],
        progress=False,
        log=lambda line: None,
        action_ball=ActionBall(action_eps) if action_names else None,
    )
    record.update(eps=cell["eps"], eps_units="normalised")
    path = sweep.record_path(cell["id"])
    write_json(path, record)
    return {
        "record": str(path),
        "natural": record["results"]["none"]["mean"],
        "worst": record["worst"],
    }
