"""Fault injection: nothing saved is lost, concurrent writers are kept out, every error is one line.

Each case reproduces a failure seen in a fault-injection pass (issue 13): two writers on one run
directory, a kill while a resume rewrites the logs, a damaged newest checkpoint, a checkpoint
pointer that leaves the run, a full disk while checkpointing, the leftovers of a kill, and a
sweep coordinator killed with -9 while its worker trains.
"""

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import robustrl
from robustrl import checkpoint, cli, runlock
from robustrl.errors import CheckpointError

HOLD = """
import sys, time
from robustrl import runlock
with runlock.locked(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def run(tmp_path, tiny):
    """A finished 600-step run with checkpoints at 300 and 600."""
    return robustrl.train(tiny(steps=600), out=tmp_path, name="run", progress=False)


@pytest.fixture
def holder(run):
    """A second process holding the run's lock; killed (-9) at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def one_line_error(capsys, code, *fragments):
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("robustrl: error:") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


# ---------------------------------------------------------------- 1. one writer per run


def test_a_second_writer_is_refused_naming_the_holder(run, holder, capsys):
    before = (run / "metrics.csv").read_bytes()
    code = cli.main(["train", "--resume", str(run), "--steps", "900"])
    one_line_error(capsys, code, "in use by another robustrl process", f"pid {holder.pid}")
    code = cli.main(["evaluate", str(run), "--episodes", "1"])
    one_line_error(capsys, code, f"pid {holder.pid}")
    code = cli.main(
        ["attack", str(run), "--attacks", "random", "--eps", "0.1", "--episodes", "1", "--quiet"]
    )
    one_line_error(capsys, code, f"pid {holder.pid}")
    assert (run / "metrics.csv").read_bytes() == before
    assert not (run / "eval").exists()


def test_the_lock_dies_with_its_holder(run, holder):
    holder.kill()  # kill -9: the OS releases the lock
    holder.wait()
    robustrl.resume(run, steps=700, progress=False)
    assert rows(run / "metrics.csv")[-1]["step"] == "700"


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    with runlock.locked(tmp_path / "r"), runlock.locked(tmp_path / "r"):
        pass
    with runlock.locked(tmp_path / "r"):  # released after the outer block
        pass


# ---------------------------------------------------------------- 2. logs survive a resume


def test_a_kill_while_resume_rewrites_the_logs_loses_nothing(run, monkeypatch):
    """A kill between writing the trimmed log and renaming it over the old one (simulated by a
    KeyboardInterrupt in ``os.replace``) leaves the old logs whole."""
    before = {name: (run / name).read_bytes() for name in ("metrics.csv", "evaluations.csv")}
    import robustrl.training as training

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        robustrl.resume(run, steps=900, progress=False)
    monkeypatch.undo()
    for name, content in before.items():
        assert (run / name).read_bytes() == content
    robustrl.resume(run, steps=900, progress=False)  # and the next resume works
    assert [r["step"] for r in rows(run / "metrics.csv")][-1] == "900"


def test_damaged_log_rows_are_dropped_with_a_warning(run, capsys):
    with open(run / "metrics.csv", "a") as f:
        f.write("8711\n6,7\nabc,1,2\n")
    with open(run / "evaluations.csv", "a") as f:
        f.write("54931640625,")
    robustrl.resume(run, steps=700, progress=False)
    err = capsys.readouterr().err
    assert "dropped 3 damaged row(s)" in err and "dropped 1 damaged row(s)" in err
    steps = [r["step"] for r in rows(run / "metrics.csv")]
    assert steps == ["100", "200", "300", "400", "500", "600", "700"]


# ---------------------------------------------------------------- 3. checkpoints


def test_resume_falls_back_to_the_older_checkpoint_when_the_newest_is_damaged(run, capsys):
    newest = checkpoint.latest(run)
    assert newest.name == "step_000000600"
    model = newest / "model.safetensors"
    model.write_bytes(model.read_bytes()[:100])  # a torn write
    robustrl.resume(run, steps=900, progress=False)
    err = capsys.readouterr().err
    assert "skipping damaged checkpoint step_000000600" in err
    assert "resuming from step_000000300" in err
    steps = [int(r["step"]) for r in rows(run / "metrics.csv")]
    assert steps == list(range(100, 1000, 100))  # rows after 300 were redone, none doubled
    assert checkpoint.latest(run).name == "step_000000900"


def test_latest_json_cannot_point_outside_the_run(run, tmp_path, capsys):
    (run / "checkpoints" / "latest.json").write_text(
        json.dumps({"step": 600, "dir": "../../other_run/checkpoints/step_000000600"})
    )
    with pytest.raises(CheckpointError, match="not a checkpoint folder of this run"):
        checkpoint.latest(run)
    code = cli.main(["evaluate", str(run), "--episodes", "1"])
    one_line_error(capsys, code, "not a checkpoint folder of this run")


def test_a_full_disk_at_a_checkpoint_keeps_the_previous_one(tmp_path, tiny, monkeypatch, capsys):
    """ENOSPC while writing checkpoint 600: a one-line error, no temporary left, checkpoint
    300 intact, and the run resumes from it once there is space."""
    original = checkpoint.save_torch

    def full_disk(tensors, path, *args, **kwargs):
        if "step_000000600" in path:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return original(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_torch", full_disk)
    out = tmp_path / "runs"
    code = cli.main(
        ["train", "--env", "Pendulum-v1", "--steps", "600", "--out", str(out), "--name", "r",
         "--set", "learning_starts=200", "--set", "checkpoint_every=300", "--set", "eval_every=0",
         "--set", "sac.hidden_sizes=[32,32]", "--set", "sac.batch_size=32", "--no-compile", "--quiet"]
    )  # fmt: skip
    one_line_error(capsys, code, "cannot write checkpoint 600", "No space left on device")
    run = out / "r"
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    assert checkpoint.latest(run).name == "step_000000300"
    monkeypatch.setattr(checkpoint, "save_torch", original)
    robustrl.resume(run, progress=False)
    assert checkpoint.latest(run).name == "step_000000600"


def test_leftovers_of_a_kill_are_removed_on_the_next_start(run):
    folder = run / "checkpoints"
    (folder / ".step_000000900.tmp").mkdir()
    (folder / ".step_000000900.tmp" / "model.safetensors").write_bytes(b"partial")
    (folder / ".latest.json.abc123.tmp").write_text("{")
    (folder / ".step_000000600.old").mkdir()
    robustrl.resume(run, steps=700, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == [
        "latest.json",
        "step_000000600",
        "step_000000700",
    ]


# ---------------------------------------------------------------- 4. sweeps


@pytest.mark.skipif(sys.platform != "linux", reason="process reparenting as on Linux")
def test_a_killed_sweep_takes_its_workers_with_it(tmp_path):
    """kill -9 of ``robustrl sweep``: its worker checkpoints the cell it was training and exits
    (before, it kept training, and a rerun trained the same run directory concurrently); the
    rerun then resumes the cell from that checkpoint."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "orphans",
                "train": {
                    "algos": ["sac"],
                    "envs": ["Pendulum-v1"],
                    "seeds": [0],
                    "steps": 200_000,
                    "overrides": {
                        "learning_starts": 100,
                        "eval_every": 0,
                        "checkpoint_every": 100_000,
                        "sac.hidden_sizes": [16],
                        "sac.batch_size": 16,
                    },
                },
                "resources": {"threads": 1, "num_cpus": 1, "num_gpus": 0},
            }
        )
    )
    out = tmp_path / "out"
    coordinator = subprocess.Popen(
        [sys.executable, "-m", "robustrl", "sweep", str(spec), "--out", str(out), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = None
    deadline = time.monotonic() + 120
    while worker is None and time.monotonic() < deadline:
        for state_file in out.glob("cells/*.json"):
            state = json.loads(state_file.read_text())
            if state.get("status") == "running" and state.get("pid"):
                metrics = list(out.glob("runs/*/metrics.csv"))
                if metrics and len(rows(metrics[0])) >= 2:  # it is training
                    worker = state["pid"]
        time.sleep(0.2)
    assert worker is not None, "the sweep's worker never started training"
    os.kill(coordinator.pid, signal.SIGKILL)
    coordinator.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and Path(f"/proc/{worker}").exists():
        status = (
            Path(f"/proc/{worker}/status").read_text()
            if Path(f"/proc/{worker}/status").exists()
            else ""
        )
        if "zombie" in status:
            break
        time.sleep(0.2)
    alive = (
        Path(f"/proc/{worker}/status").exists()
        and "zombie" not in Path(f"/proc/{worker}/status").read_text()
    )
    assert not alive, "the worker outlived its coordinator"
    (run,) = out.glob("runs/*")
    assert checkpoint.latest(run)  # it checkpointed on its way out
    (state,) = [json.loads(p.read_text()) for p in out.glob("cells/*.json")]
    assert state["status"] == "interrupted"


# ---------------------------------------------------------------- 5. command-line input


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["attack", "RUN", "--eps", "1e30"], "--eps must be at most 1e+06"),
        (["attack", "RUN", "--eps", "0.1", "--attacks", "a-random", "--action-eps", "5"],
         "--action-eps must be in [0, 2]"),
        (["evaluate", "RUN", "--seed", "-1"], "--seed must be in [0, 4294967295], got -1"),
        (["attack", "RUN", "--eps", "0.1", "--seed", "-1"], "--seed must be in [0, 4294967295]"),
        (["quickstart", "--steps", "0"], "--steps must be > 0, got 0"),
        (["sweep", "SPEC", "--workers", "0"], "--workers must be > 0, got 0"),
        (["train", "--env", "Pendulum-v1", "--set", "sac.actor_lr=nan"],
         "sac.actor_lr must be a finite number > 0, got nan"),
    ],
)  # fmt: skip
def test_bad_command_line_values_are_one_line_errors(run, tmp_path, capsys, argv, fragment):
    argv = [str(run) if a == "RUN" else a for a in argv]
    argv = [str(tmp_path / "spec.yaml") if a == "SPEC" else a for a in argv]
    (tmp_path / "spec.yaml").write_text("name: x\n")
    if argv[0] in ("train", "quickstart"):
        argv += ["--out", str(tmp_path / "out")]
    code = cli.main(argv)
    one_line_error(capsys, code, fragment)
    assert not (tmp_path / "out").exists() and not (run / "eval").exists()


@pytest.mark.parametrize("command", ["train", "quickstart"])
def test_an_output_folder_under_a_file_is_a_one_line_error(tmp_path, capsys, command):
    blocker = tmp_path / "file"
    blocker.write_text("")
    argv = [command, "--out", str(blocker / "runs"), "--steps", "300", "--quiet"]
    if command == "train":
        argv += ["--env", "Pendulum-v1"]
    code = cli.main(argv)
    one_line_error(capsys, code, "Not a directory")


def test_a_run_name_too_long_for_the_filesystem_is_a_one_line_error(tmp_path, capsys):
    code = cli.main(
        ["train", "--env", "Pendulum-v1", "--steps", "300", "--out", str(tmp_path),
         "--name", "x" * 300, "--quiet"]
    )  # fmt: skip
    one_line_error(capsys, code, "File name too long")


# ---------------------------------------------------------------- 6. damaged run files


def test_damaged_run_files_are_one_line_errors(run, capsys):
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "spaces": {}}))
    one_line_error(capsys, cli.main(["evaluate", str(run)]), "'spaces' must give obs_dim")
    (run / "config.json").write_text(json.dumps(config))
    from safetensors.torch import load_file, save_file

    model = checkpoint.latest(run) / "model.safetensors"
    tensors = load_file(str(model))
    key = next(k for k in tensors if k.startswith("actor."))
    tensors[key][0] = float("nan")
    save_file(tensors, str(model))
    one_line_error(capsys, cli.main(["evaluate", str(run)]), "holds NaN or infinite values")


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"id": "c", "kind": "train", "fingerprint": "f", "attempts": "x"}', "attempts must be"),
        ('{"id": "c", "kind": "train", "fingerprint": "f", "status": "??"}', "unknown status"),
    ],
)
def test_a_damaged_sweep_cell_state_is_named(tmp_path, content, fragment):
    from robustrl.errors import ConfigError
    from robustrl.sweep.state import SweepDir

    sweep = SweepDir(tmp_path)
    sweep.state_path("c").parent.mkdir(parents=True)
    sweep.state_path("c").write_text(content)
    with pytest.raises(ConfigError, match=f"corrupt cell state .*c.json: .*{fragment}"):
        sweep.read("c")
