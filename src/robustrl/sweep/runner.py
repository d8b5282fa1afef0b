"""The scheduler: runs a sweep's cells on an executor, in dependency order, resumably.

``run_sweep(spec, out, executor)``:

1. prepares the sweep directory (``state.py``): writes ``sweep.yaml`` / ``sweep.json``, creates a
   ``pending`` state for new cells, refuses a spec that changed an existing cell, and takes a lock
   so two sweep processes cannot drive one directory;
2. skips ``done`` cells; submits train cells and, as soon as a train cell is done, its attack
   cells (ready attack cells go first, so results arrive early). An attack cell whose train cell
   failed is *blocked* until a later run;
3. emits one event per start / finish / failure with counts and an ETA (mean duration of the
   finished cells of each kind, this run's and earlier runs', times the remaining cells, divided
   by the cells the executor runs at once); the default handler prints each as one line and every
   event is appended to ``sweep.log``;
4. on Ctrl-C (KeyboardInterrupt in the coordinator): cancels queued cells, interrupts running ones
   (train cells checkpoint first), waits for them (a second Ctrl-C stops waiting), records them as
   ``interrupted`` and re-raises. Running the same command again continues where it stopped.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from robustrl.checkpoint import write_json
from robustrl.errors import ConfigError
from robustrl.sweep.spec import SweepSpec
from robustrl.sweep.state import CellState, SweepDir, fingerprint, now

STOP_GRACE_S = 180.0  # how long Ctrl-C waits for running cells to checkpoint and return


@dataclass
class Event:
    """Something that happened in a sweep, with the counts after it and a formatted line."""

    kind: str  # begin, start, done, failed, interrupted, blocked, stopping, end
    cell: dict[str, Any] | None
    state: CellState | None
    counts: dict[str, int]
    eta_s: float | None
    line: str


@dataclass
class SweepSummary:
    root: Path
    total: int
    done: int
    ran: int  # cells run by this call
    failed: list[CellState] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # attack cells whose train cell failed
    interrupted: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _print_event(event: Event) -> None:
    tqdm.write(event.line)


def _prepare(sweep: SweepDir, spec: SweepSpec) -> dict[str, CellState]:
    """Create the directory files; the state of every cell (new cells written as pending)."""
    import robustrl

    sweep.root.mkdir(parents=True, exist_ok=True)
    states = {}
    for cell in spec.cells:
        expected = fingerprint(cell)
        state = sweep.read(cell["id"])
        if state is not None and state.fingerprint != expected:
            raise ConfigError(
                f"{sweep.root} already has cell {cell['id']} with other settings; use a new "
                "--out for a changed grid (or delete that cell's files to rerun it)"
            )
        if state is None:
            state = CellState(id=cell["id"], kind=cell["kind"], fingerprint=expected)
            sweep.write(state)
        states[cell["id"]] = state
    (sweep.root / "sweep.yaml").write_text(spec.text)
    write_json(
        sweep.spec_json,
        {
            "name": spec.name,
            "source": spec.source,
            "updated": now(),
            "robustrl": robustrl.__version__,
            "resources": {kind: vars(r) for kind, r in spec.resources.items()},
            "cells": spec.cells,
        },
    )
    sweep.stop_file.unlink(missing_ok=True)
    return states


def _lock(sweep: SweepDir):
    """An exclusive lock on the sweep directory for this process's lifetime of the sweep."""
    handle = (sweep.root / ".lock").open("a")  # not "w": the holder's line stays readable
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(f"another robustrl sweep is running in {sweep.root}") from None
    handle.truncate(0)
    handle.write(f"{socket.gethostname()} pid {os.getpid()} since {now()}\n")
    handle.flush()
    return handle


class _Scheduler:
    """One run of a sweep: the queue of ready cells, the cells in flight, their statuses."""

    def __init__(self, spec, sweep, executor, on_event):
        self.spec, self.sweep, self.executor, self.on_event = spec, sweep, executor, on_event
        self.cells = {c["id"]: c for c in spec.cells}
        self.status: dict[str, str] = {}
        self.states: dict[str, CellState] = {}
        self.in_flight: dict[Future, tuple[dict[str, Any], float]] = {}
        self.summary = SweepSummary(sweep.root, total=len(spec.cells), done=0, ran=0)

    # -- bookkeeping

    def counts(self) -> dict[str, int]:
        counts = {k: 0 for k in ("done", "running", "failed", "pending", "blocked", "interrupted")}
        for status in self.status.values():
            counts[status] += 1
        return counts

    def eta(self) -> float | None:
        """Remaining work / cells at once. A cell's expected duration is the mean of finished
        cells like it (same kind, algo and env), else of the same kind; None until one is known."""
        similar, by_kind = defaultdict(list), defaultdict(list)
        for cell_id, state in self.states.items():
            if state.status == "done" and state.total_seconds:
                cell = self.cells[cell_id]
                similar[_similar(cell)].append(state.total_seconds)
                by_kind[cell["kind"]].append(state.total_seconds)
        remaining, cells = 0.0, 0
        flying = {cell["id"]: started for cell, started in self.in_flight.values()}
        for cell_id, status in self.status.items():
            if status in ("done", "failed", "blocked", "interrupted"):
                continue
            cell = self.cells[cell_id]
            durations = similar.get(_similar(cell)) or by_kind.get(cell["kind"])
            if not durations:
                return None
            elapsed = time.time() - flying[cell_id] if cell_id in flying else 0.0
            remaining += max(sum(durations) / len(durations) - elapsed, 0.0)
            cells += 1
        slots = self.executor.slots(self.spec.resources["train"])
        return remaining / max(1, min(slots, cells))

    def emit(
        self,
        kind: str,
        cell: dict[str, Any] | None = None,
        state: CellState | None = None,
        detail: str = "",
    ) -> None:
        counts = self.counts()
        eta = self.eta()
        eta_text = "?" if eta is None else tqdm.format_interval(eta)
        head = (
            f"[{counts['done']}/{len(self.status)} done, {counts['running']} running, "
            f"{counts['failed']} failed, ETA {eta_text}]"
        )
        word = getattr(self.executor, "start_word", "start") if kind == "start" else kind
        what = f" {word} {cell['kind']} {cell['id']}" if cell else f" {word}"
        line = f"{head}{what}{f' ({detail})' if detail else ''}"
        self.sweep.log(line)
        self.on_event(Event(kind, cell, state, counts, eta, line))

    # -- running

    def submit(self, cell: dict[str, Any]) -> None:
        resources = self.spec.resources[cell["kind"]]
        future = self.executor.submit(self.sweep.root, cell, resources)
        self.in_flight[future] = (cell, time.time())
        self.status[cell["id"]] = "running"
        self.summary.ran += 1
        self.emit("start", cell)

    def outcome(self, future: Future, cell: dict[str, Any]) -> CellState:
        """The cell's final state: what the worker returned, or what the coordinator saw."""
        try:
            return CellState.from_dict(future.result())
        except (CancelledError, KeyboardInterrupt) as exc:
            return self._coordinator_state(cell, "interrupted", exc)
        except Exception as exc:
            cancelled = type(exc).__name__ == "TaskCancelledError"  # ray.cancel
            return self._coordinator_state(cell, "interrupted" if cancelled else "failed", exc)

    def _coordinator_state(
        self, cell: dict[str, Any], status: str, exc: BaseException
    ) -> CellState:
        """Record a cell the worker could not report on (cancelled, lost worker)."""
        state = self.sweep.read(cell["id"]) or CellState(
            cell["id"], cell["kind"], fingerprint(cell)
        )
        if state.status in ("pending", "running"):
            state.status = status
            state.error = " ".join(f"{type(exc).__name__}: {exc}".split()) or type(exc).__name__
            state.finished = now()
            self.sweep.write(state)
        return state

    def finish(self, future: Future, waiting: dict[str, list], ready: deque) -> None:
        cell, _ = self.in_flight.pop(future)
        state = self.outcome(future, cell)
        self.states[cell["id"]] = state
        self.status[cell["id"]] = state.status
        detail = _detail(state)
        if cell["kind"] == "train":
            followers = waiting.pop(cell["id"], [])
            if state.status == "done":
                ready.extend(followers)
            else:
                for follower in followers:
                    self.status[follower["id"]] = "blocked"
                    self.summary.blocked.append(follower["id"])
                if followers:
                    detail += f"; {len(followers)} attack cells wait for it"
        self.emit(state.status, cell, state, detail)

    def run(self) -> SweepSummary:
        start = time.time()
        self.states = _prepare(self.sweep, self.spec)
        for cell_id, state in self.states.items():
            self.status[cell_id] = "done" if state.status == "done" else "pending"
        was_running = [s.id for s in self.states.values() if s.status == "running"]
        train = deque(c for c in self.spec.train_cells if self.status[c["id"]] != "done")
        waiting: dict[str, list] = defaultdict(list)
        ready: deque = deque()
        for cell in self.spec.attack_cells:
            if self.status[cell["id"]] == "done":
                continue
            if self.status[cell["train"]] == "done":
                ready.append(cell)
            else:
                waiting[cell["train"]].append(cell)
        skipped = sum(1 for s in self.status.values() if s == "done")
        note = (
            f"; {len(was_running)} cells were left running by a stopped sweep: resuming them"
            if was_running
            else ""
        )
        self.emit(
            "begin",
            detail=f"sweep {self.spec.name} in {self.sweep.root} on {self.executor.describe()}: "
            f"{len(self.spec.train_cells)} train + {len(self.spec.attack_cells)} attack cells, "
            f"{skipped} already done{note}",
        )
        try:
            while train or ready or self.in_flight:
                capacity = self.executor.capacity
                while (ready or train) and (capacity is None or len(self.in_flight) < capacity):
                    self.submit(ready.popleft() if ready else train.popleft())
                done, _ = wait(list(self.in_flight), return_when=FIRST_COMPLETED)
                for future in done:
                    self.finish(future, waiting, ready)
        except KeyboardInterrupt:
            self.stop(waiting, ready)
            raise
        finally:
            self.summary.seconds = time.time() - start
        self.summarise()
        self.emit(
            "end",
            detail=f"{self.summary.done}/{self.summary.total} cells done in "
            f"{tqdm.format_interval(self.summary.seconds)}",
        )
        return self.summary

    def stop(self, waiting, ready) -> None:
        """Ctrl-C: stop queued and running cells cleanly, record them, leave the rest pending."""
        self.sweep.stop_file.touch()
        self.emit(
            "stopping",
            detail="interrupting running cells (train cells checkpoint first); "
            "Ctrl-C again to stop waiting",
        )
        flying = list(self.in_flight)
        try:
            self.executor.interrupt(flying)
            done, _ = wait(flying, timeout=STOP_GRACE_S)
            for future in done:
                self.finish(future, waiting, ready)
        except KeyboardInterrupt:
            pass
        lost = list(self.in_flight)
        for future in lost:  # did not return in time: recorded by us
            cell, _ = self.in_flight.pop(future)
            self._coordinator_state(cell, "interrupted", KeyboardInterrupt("sweep stopped"))
            self.status[cell["id"]] = "interrupted"
        self.executor.close(wait=not lost)
        self.sweep.stop_file.unlink(missing_ok=True)
        self.summarise()
        self.emit(
            "interrupted",
            detail=f"stopped; run the same command again to continue "
            f"({self.summary.done}/{self.summary.total} cells done)",
        )

    def summarise(self) -> None:
        self.summary.done = sum(1 for s in self.status.values() if s == "done")
        self.summary.failed = [self.states[i] for i, s in self.status.items() if s == "failed"]
        self.summary.interrupted = [i for i, s in self.status.items() if s == "interrupted"]


def _similar(cell: dict[str, Any]) -> tuple[str, str, str]:
    return cell["kind"], cell["algo"], cell["env"]


def _detail(state: CellState) -> str:
    if state.status == "failed":
        return state.error or "failed"
    parts = [f"{state.seconds:.1f} s" if state.seconds is not None else ""]
    result = state.result or {}
    if "resumed_from" in result:
        parts.append(f"resumed from step {result['resumed_from']}")
    if "final_eval" in result:
        parts.append(f"eval return {result['final_eval']:.1f}")
    if "worst" in result:
        worst = result["worst"]
        parts.append(
            f"natural {result['natural']:.1f}, worst {worst['mean']:.1f} ({worst['attack']})"
        )
    return ", ".join(p for p in parts if p)


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    executor,
    on_event: Callable[[Event], None] | None = None,
    progress: bool = True,
) -> SweepSummary:
    """Run (or continue) ``spec`` in the sweep directory ``out`` on ``executor``.

    ``on_event`` receives every ``Event`` (default: print its line when ``progress``). The
    executor is closed at the end. Failed cells do not raise: they are in the summary.
    """
    sweep = SweepDir(out)
    sweep.root.mkdir(parents=True, exist_ok=True)
    handler = on_event or (_print_event if progress else (lambda event: None))
    lock = _lock(sweep)
    try:
        return _Scheduler(spec, sweep, executor, handler).run()
    finally:
        executor.close()
        lock.close()


def load_sweep(root: str | Path) -> dict[str, Any]:
    """``sweep.json`` of a sweep directory (its cells and resources)."""
    data = SweepDir(root).read_spec()
    if data is None:
        raise ConfigError(f"{root} is not a sweep directory (no sweep.json)")
    return data
