"""One writer per run directory: an exclusive lock on ``RUN/.lock``.

Training, resuming, evaluating and attacking a run all write into its directory (logs,
checkpoints, results, attack caches). Two of them at once corrupt it: interleaved CSV rows, a
checkpoint rotated under a reader, a resume that truncates what another process appends. So every
writer holds ``fcntl.flock(LOCK_EX)`` on ``RUN/.lock`` while it works. The operating system
releases the lock when the holder exits, however it exits (kill -9 included), so a lock is
never stale; the file keeps the holder's pid and command only to name it in the error a second
writer gets. The lock is re-entrant within a process (attacking right after training in one
process, a quickstart, a test), and only advisory: readers (``report``, ``load``) do not take it.

Platforms without ``fcntl`` (Windows) run unlocked.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from robustrl.errors import RobustRLError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
_held: dict[Path, tuple[int, int]] = {}  # resolved run dir -> (fd, depth) held by this process


class RunDirLocked(RobustRLError):
    """Another process is writing to the run directory."""


@contextlib.contextmanager
def locked(run_dir: str | Path, what: str = "writing") -> Iterator[None]:
    """Hold the exclusive lock of ``run_dir`` (created if missing) for the ``with`` block;
    a second process gets ``RunDirLocked`` naming the holder's pid at once (no waiting)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    key = run_dir.resolve()
    if key in _held:  # re-entrant within this process
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        try:
            yield
        finally:
            fd, depth = _held[key]
            _held[key] = (fd, depth - 1)
        return
    if fcntl is None:  # pragma: no cover
        yield
        return
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise RunDirLocked(
            f"{run_dir} is in use by another robustrl process ({holder}); wait for it to finish "
            f"or stop it before {what} this run"
        ) from None
    except OSError as exc:  # a filesystem without locks
        os.close(fd)
        raise RobustRLError(f"cannot lock {path}: {exc.strerror or exc}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv)[:200]}\n".encode(), 0)
    _held[key] = (fd, 1)
    try:
        yield
    finally:
        del _held[key]
        os.close(fd)  # releases the lock; the file stays (removing it would race a new holder)


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 512, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "pid unknown"
