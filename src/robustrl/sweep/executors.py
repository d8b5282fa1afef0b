"""Where cells run: worker processes on this machine, or tasks on a Ray cluster.

Both executors run the same function, ``robustrl.sweep.cells.run_cell``, and hand back
``concurrent.futures.Future`` objects, so the scheduler (``runner.py``) does not care which one
it drives. Cells write their own state files and results into the sweep directory; with Ray that
directory must be on a filesystem every node sees (NFS, a cluster filesystem), and robustrl must
be installed on every node.

- ``LocalExecutor(workers)``: a ``ProcessPoolExecutor`` with the ``spawn`` start method (a fresh
  interpreter per worker: no forked torch/OpenMP state, the same on Linux and macOS); workers
  stop when the coordinator dies (``cells.init_worker``). The
  scheduler submits at most ``workers`` cells at a time, so nothing waits in a queue that Ctrl-C
  would have to drain. Each cell sets its own torch thread count (``resources.threads``).
- ``RayExecutor(address)``: ``ray.init(address=...)`` (``auto``: the cluster this machine belongs
  to, ``ray start --head`` first; ``local``: a throwaway single-machine instance), then one Ray
  task per cell with the cell's ``num_cpus`` / ``num_gpus``; Ray queues them until resources
  are free. No automatic retries: a failed cell is recorded and retried by re-running the sweep.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from robustrl.errors import ConfigError
from robustrl.sweep.cells import init_worker, run_cell
from robustrl.sweep.spec import Resources
from robustrl.sweep.state import SweepDir


class LocalExecutor:
    """``workers`` spawned processes on this machine."""

    name = "local"
    start_word = "start"

    def __init__(self, workers: int = 1):
        if workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}")
        self.workers = workers
        self.capacity: int | None = workers  # cells in flight at once
        self.pool = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker
        )
        self.cells: dict[Future, tuple[str, str]] = {}

    def describe(self) -> str:
        return f"local, {self.workers} worker process{'es' if self.workers > 1 else ''}"

    def slots(self, resources: Resources) -> int:
        return self.workers

    def submit(self, root: Path, cell: dict[str, Any], resources: Resources) -> Future:
        future = self.pool.submit(run_cell, str(root), cell, resources.threads)
        self.cells[future] = (str(root), cell["id"])
        return future

    def interrupt(self, futures: list[Future]) -> None:
        """Cancel queued cells; send SIGINT to the workers running the others (they checkpoint
        and return ``interrupted``). Workers are found through their cells' state files."""
        host = socket.gethostname()
        for future in futures:
            if future.cancel():
                continue
            root, cell_id = self.cells[future]
            state = SweepDir(root).read(cell_id)
            if state and state.status == "running" and state.host == host and state.pid:
                with contextlib.suppress(ProcessLookupError):  # it has just finished
                    os.kill(state.pid, signal.SIGINT)

    def close(self, wait: bool = True) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=True)


class RayExecutor:
    """One Ray task per cell on an existing cluster (or a local instance)."""

    name = "ray"
    start_word = "submit"  # Ray starts a submitted task when the cluster has room for it

    def __init__(self, address: str = "auto"):
        try:
            import ray
        except ImportError:
            raise ConfigError(
                "--backend ray needs ray: pip install 'robustrl[ray]' (or use --backend local)"
            ) from None
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            try:
                ray.init(
                    address=None if address == "local" else address,
                    logging_level="warning",
                    include_dashboard=False if address == "local" else None,
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                problem = " ".join(str(exc).split())
                raise ConfigError(
                    f"cannot connect to a Ray cluster at {address!r}: {problem}; start one with "
                    "`ray start --head`, pass --address HOST:PORT, or use --backend local"
                ) from None
            self.started = True
        self.address = address
        self.remote = ray.remote(run_cell)
        self.capacity: int | None = None  # submit everything ready; Ray queues by resources
        self.refs: dict[Future, Any] = {}

    def describe(self) -> str:
        total = self.ray.cluster_resources()
        where = f"at {self.address}" if self.started else "(already initialised)"
        return f"ray {where}, {total.get('CPU', 0):g} CPUs and {total.get('GPU', 0):g} GPUs"

    def slots(self, resources: Resources) -> int:
        """Cells the cluster can run at once (for the ETA)."""
        total = self.ray.cluster_resources()
        fits = [total.get("CPU", 1) / resources.num_cpus]
        if resources.num_gpus:
            fits.append(total.get("GPU", 0) / resources.num_gpus)
        return max(1, int(min(fits)))

    def submit(self, root: Path, cell: dict[str, Any], resources: Resources) -> Future:
        ref = self.remote.options(
            num_cpus=resources.num_cpus,
            num_gpus=resources.num_gpus,
            max_retries=0,
            name=f"robustrl:{cell['id']}",
        ).remote(str(Path(root).resolve()), cell, resources.threads)
        future = ref.future()
        self.refs[future] = ref
        return future

    def interrupt(self, futures: list[Future]) -> None:
        """Ray cancels queued tasks and raises KeyboardInterrupt in running ones."""
        for future in futures:
            self.ray.cancel(self.refs[future])

    def close(self, wait: bool = True) -> None:
        if self.started:
            self.ray.shutdown()


def make_executor(backend: str = "local", workers: int | None = None, address: str | None = None):
    """The executor the CLI flags ask for (``--backend``, ``--workers``, ``--address``)."""
    if backend == "local":
        if address is not None:
            raise ConfigError("--address is for --backend ray")
        return LocalExecutor(workers or 1)
    if backend == "ray":
        if workers is not None:
            raise ConfigError(
                "--workers is for --backend local; on Ray, resources.num_cpus per cell and the "
                "cluster's size decide how many cells run at once"
            )
        return RayExecutor(address or "auto")
    raise ConfigError(f"unknown backend {backend!r}; choose local or ray")
