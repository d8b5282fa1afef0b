"""Checkpoints: safetensors for every array, JSON for everything else. Never pickle.

Layout inside a run directory::

    checkpoints/
      latest.json                 {"step": N, "dir": "step_000000N"}, replaced atomically
      step_000000N/
        model.safetensors         networks, temperature, normaliser statistics
        optim.safetensors         optimiser moments and step counts
        state.json                counters, optimiser hyperparameters, RNG states, versions
      buffer.safetensors          replay buffer (only with --save-buffer)

A checkpoint is written to a temporary folder and renamed into place, and ``latest.json`` is
replaced only after that, so an interrupted save never damages the previous checkpoint.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file as load_torch
from safetensors.torch import save_file as save_torch

from robustrl.errors import CheckpointError

KEEP = 2  # checkpoint folders kept: the newest and the one before it


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically: a unique temporary file in the same folder (so concurrent writers,
    e.g. sweep workers, never share one), then a rename into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from other users of a shared dir
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"missing file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"corrupt JSON file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"corrupt JSON file {path}: expected an object")
    return data


def _read_safetensors(load, path: Path):
    try:
        return load(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"missing checkpoint file {path}") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"corrupt checkpoint file {path}: {exc}") from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    return _read_safetensors(load_torch, path)


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    return _read_safetensors(load_numpy, path)


# ---------------------------------------------------------------- optimiser state


def optimizer_tensors(name: str, optim: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Flatten an optimiser's per-parameter state to ``{name.i.key: tensor}``."""
    out = {}
    for index, state in optim.state_dict()["state"].items():
        for key, value in state.items():
            out[f"{name}.{index}.{key}"] = torch.as_tensor(value).clone()
    return out


def load_optimizer(name: str, optim: torch.optim.Optimizer, tensors, groups) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    prefix = f"{name}."
    for full_key, value in tensors.items():
        if full_key.startswith(prefix):
            index, key = full_key[len(prefix) :].split(".", 1)
            state.setdefault(int(index), {})[key] = value
    optim.load_state_dict({"state": state, "param_groups": groups})


# ---------------------------------------------------------------- save / load


def save(
    run_dir: Path,
    step: int,
    model: dict[str, torch.Tensor],
    optim: dict[str, torch.Tensor],
    state: dict[str, Any],
    buffer: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write checkpoint ``step`` of ``run_dir`` atomically; keep the newest ``KEEP``."""
    try:
        return _save(Path(run_dir), step, model, optim, state, buffer)
    except OSError as exc:  # a full disk, a quota, a read-only filesystem
        remove_temporaries(run_dir)
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        if exc.errno == errno.ENOSPC:
            reason += "; free some space and resume: the previous checkpoint is intact"
        raise CheckpointError(f"cannot write checkpoint {step} of {run_dir}: {reason}") from None
    except SafetensorError as exc:  # safetensors reports write errors as its own type
        remove_temporaries(run_dir)
        raise CheckpointError(
            f"cannot write checkpoint {step} of {run_dir}: {exc}; the previous checkpoint is intact"
        ) from None


def _save(run_dir, step, model, optim, state, buffer) -> Path:
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:09d}"
    tmp = folder / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_torch(
        {k: v.detach().contiguous().cpu() for k, v in model.items()}, str(tmp / "model.safetensors")
    )
    save_torch({k: v.contiguous().cpu() for k, v in optim.items()}, str(tmp / "optim.safetensors"))
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    final = folder / name
    if final.exists():  # same step saved again (e.g. after a resume): swap, then delete
        old = folder / f".{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    if buffer is not None:
        tmp_buffer = folder / ".buffer.safetensors.tmp"
        save_numpy(buffer, str(tmp_buffer), metadata={"step": str(step)})
        os.replace(tmp_buffer, folder / "buffer.safetensors")
    write_json(folder / "latest.json", {"step": step, "dir": name})
    for old in sorted(folder.glob("step_*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


STEP_FOLDER = re.compile(r"step_\d{9}")


def candidates(run_dir: Path) -> list[Path]:
    """The run's checkpoint folders, newest first: the one ``latest.json`` names, then the older
    ones kept beside it (a resume falls back to those when the newest is damaged).

    ``latest.json`` may only name a ``step_NNNNNNNNN`` folder of the run's own ``checkpoints``
    (never a path elsewhere); an unreadable pointer is skipped with the folders still found."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise CheckpointError(f"{run_dir} is not a robustrl run directory (no config.json)")
    folder = run_dir / "checkpoints"
    pointer = folder / "latest.json"
    if not pointer.is_file():
        raise CheckpointError(f"{run_dir} has no checkpoint yet (no checkpoints/latest.json)")
    found = sorted(
        (p for p in folder.glob("step_*") if STEP_FOLDER.fullmatch(p.name)), reverse=True
    )
    try:
        name = str(read_json(pointer).get("dir", ""))
    except CheckpointError:
        name = ""
    if name and not STEP_FOLDER.fullmatch(name):
        raise CheckpointError(
            f"{pointer} names {name!r}, which is not a checkpoint folder of this run (step_NNNNNNNNN)"
        )
    newest = folder / name if name else None
    if newest is not None and newest.is_dir():
        found = [newest] + [p for p in found if p != newest and p.name < newest.name]
    if not found:
        raise CheckpointError(f"{pointer} points to a missing checkpoint {name!r}")
    return found


def latest(run_dir: Path) -> Path:
    """The folder of the newest checkpoint of ``run_dir``."""
    return candidates(run_dir)[0]


def remove_temporaries(run_dir: Path) -> None:
    """Delete what an interrupted or failed save leaves behind (``.step_*.tmp`` folders,
    ``.*.tmp`` files, ``.step_*.old``); call only while holding the run's lock."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return
    for path in folder.glob(".*"):
        if path.name.endswith((".tmp", ".old")):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def load_buffer(run_dir: Path) -> dict[str, np.ndarray] | None:
    path = Path(run_dir) / "checkpoints" / "buffer.safetensors"
    return read_arrays(path) if path.is_file() else None


def buffer_step(run_dir: Path) -> int | None:
    """Step at which the saved buffer was written (it must match the checkpoint to be used)."""
    path = Path(run_dir) / "checkpoints" / "buffer.safetensors"
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return int((f.metadata() or {}).get("step", -1))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"corrupt checkpoint file {path}: {exc}") from None
