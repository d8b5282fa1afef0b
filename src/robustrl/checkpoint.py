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

import json
import os
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
    folder = Path(run_dir) / "checkpoints"
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


def latest(run_dir: Path) -> Path:
    """The folder of the newest complete checkpoint of ``run_dir``."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise CheckpointError(f"{run_dir} is not a robustrl run directory (no config.json)")
    pointer = run_dir / "checkpoints" / "latest.json"
    if not pointer.is_file():
        raise CheckpointError(f"{run_dir} has no checkpoint yet (no checkpoints/latest.json)")
    info = read_json(pointer)
    folder = run_dir / "checkpoints" / str(info.get("dir", ""))
    if not info.get("dir") or not folder.is_dir():
        raise CheckpointError(f"{pointer} points to a missing checkpoint {folder.name!r}")
    return folder


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
