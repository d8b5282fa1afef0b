"""The command line: every bad input gives one line naming the problem, and loses nothing."""

import json
import shutil

import pytest

import robustrl
from robustrl.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("robustrl: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


TRAIN = ["train", "--quiet", "--no-compile"]


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--env", "NoSuchEnv-v0"], ["NoSuchEnv-v0"]),
        (["--env", "Pendulum-v1", "--algo", "sacc"], ["unknown algo 'sacc'"]),
        (["--env", "CartPole-v1"], ["CartPole-v1", "action space must be a 1-D Box"]),
        (["--env", "Pendulum-v1", "--steps", "0"], ["steps must be > 0, got 0"]),
        (["--env", "Pendulum-v1", "--steps", "-10"], ["steps must be > 0, got -10"]),
        (["--env", "Pendulum-v1", "--set", "sac.lr=0.1"], ["unknown --set key 'sac.lr'"]),
        (
            ["--env", "Pendulum-v1", "--set", "sac.batch_size=big"],
            ["sac.batch_size expects int, got 'big'"],
        ),
        (
            ["--env", "Pendulum-v1", "--preset", "paper"],
            ["preset 'paper' has no settings for 'Pendulum-v1'"],
        ),
        ([], ["train needs --env"]),
        (
            ["--env", "Pendulum-v1", "--algo", "valt-eps-sac"],
            ["valt-eps-sac needs an observation budget", "adversary.eps"],
        ),
        (
            ["--env", "Pendulum-v1", "--algo", "valt-soft-sac", "--set", "eps=-0.1"],
            ["adversary.eps must be a finite number >= 0, got -0.1"],
        ),
        (
            [
                "--env",
                "Pendulum-v1",
                "--algo",
                "robust-sac",
                "--set",
                "eps=0.1",
                "--set",
                "regulariser.coef=-1",
            ],
            ["regulariser.coef must be >= 0"],
        ),
    ],
)
def test_bad_train_arguments(capsys, tmp_path, args, fragments):
    code, _, err = run_cli(capsys, *TRAIN, "--out", str(tmp_path), *args)
    assert_one_line_error(code, err, *fragments)
    assert not any(tmp_path.iterdir())  # nothing was created


def test_not_a_run_directory(capsys, tmp_path):
    code, _, err = run_cli(capsys, "evaluate", str(tmp_path))
    assert_one_line_error(code, err, "is not a robustrl run directory")
    code, _, err = run_cli(capsys, *TRAIN, "--resume", str(tmp_path / "missing"))
    assert_one_line_error(code, err, "missing")


@pytest.fixture
def trained(tmp_path_factory, tiny):
    out = tmp_path_factory.mktemp("runs")
    return robustrl.train(
        tiny(steps=300, checkpoint_every=300, eval_every=0), out=out, name="run", progress=False
    )


def snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_existing_run_is_never_overwritten(capsys, trained):
    before = snapshot(trained)
    code, _, err = run_cli(
        capsys, *TRAIN, "--env", "Pendulum-v1", "--out", str(trained.parent), "--name", "run"
    )
    assert_one_line_error(code, err, "already exists", "--resume")
    assert snapshot(trained) == before


def test_checkpoint_from_another_env(capsys, trained, tiny, tmp_path):
    other = robustrl.train(
        tiny(env="InvertedPendulum-v5", steps=300, checkpoint_every=300, eval_every=0),
        out=tmp_path,
        name="ip",
        progress=False,
    )
    shutil.rmtree(other / "checkpoints")
    shutil.copytree(trained / "checkpoints", other / "checkpoints")
    before = snapshot(other)
    code, _, err = run_cli(capsys, "evaluate", str(other))
    assert_one_line_error(code, err, "does not fit", "shape")
    code, _, err = run_cli(capsys, *TRAIN, "--resume", str(other), "--steps", "600")
    assert_one_line_error(code, err, "Pendulum-v1", "InvertedPendulum-v5")
    assert snapshot(other) == before


@pytest.mark.parametrize("damage", ["truncate", "garbage", "json"])
def test_corrupt_checkpoint(capsys, trained, damage):
    folder = trained / "checkpoints" / "step_000000300"
    if damage == "truncate":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        (folder / "model.safetensors").write_bytes(b"\x00\x01not a safetensors file")
    else:
        (folder / "state.json").write_text("{ broken")
    before = snapshot(trained)
    code, _, err = (
        run_cli(capsys, "evaluate", str(trained))
        if damage != "json"
        else run_cli(capsys, *TRAIN, "--resume", str(trained), "--steps", "600")
    )
    assert_one_line_error(code, err, "corrupt", str(folder))
    assert snapshot(trained) == before


@pytest.mark.parametrize(
    "env_id, fragment",
    [("NanObs-v0", "non-finite observation"), ("InfReward-v0", "non-finite reward")],
)
def test_non_finite_env_values(capsys, tmp_path, env_id, fragment):
    args = [*TRAIN, "--env", env_id, "--steps", "1000", "--out", str(tmp_path), "--name", "nan"]
    args += [
        "--set",
        "learning_starts=100",
        "--set",
        "checkpoint_every=200",
        "--set",
        "eval_every=0",
    ]
    args += ["--set", "sac.hidden_sizes=[16]", "--set", "sac.batch_size=16"]
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, env_id, fragment)
    # the checkpoint written before the bad value is intact and loadable
    assert json.loads((tmp_path / "nan" / "checkpoints" / "latest.json").read_text())["step"] == 200
    assert robustrl.load(tmp_path / "nan").step == 200


def test_train_then_evaluate(capsys, tmp_path):
    args = [
        *TRAIN,
        "--env",
        "Pendulum-v1",
        "--steps",
        "400",
        "--seed",
        "1",
        "--out",
        str(tmp_path),
        "--name",
        "ok",
    ]
    args += [
        "--set",
        "learning_starts=100",
        "--set",
        "sac.hidden_sizes=[16]",
        "--set",
        "eval_every=0",
    ]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "run directory:" in out
    code, out, _ = run_cli(
        capsys, "evaluate", str(tmp_path / "ok"), "--episodes", "2", "--deterministic"
    )
    assert code == 0 and "+-" in out and "2 episodes, deterministic" in out
    assert json.loads((tmp_path / "ok" / "eval" / "clean.json").read_text())["episodes"] == 2
    code, _, err = run_cli(capsys, "evaluate", str(tmp_path / "ok"), "--episodes", "0")
    assert_one_line_error(code, err, "episodes must be > 0")
    code, _, err = run_cli(capsys, *TRAIN, "--resume", str(tmp_path / "ok"), "--seed", "3")
    assert_one_line_error(code, err, "--resume continues a run with its saved config")
    code, _, err = run_cli(capsys, *TRAIN, "--resume", str(tmp_path / "ok"))
    assert_one_line_error(code, err, "has already reached step 400 of 400", "--steps N")
    code, _, err = run_cli(capsys, *TRAIN, "--resume", str(tmp_path / "ok"), "--steps", "300")
    assert_one_line_error(code, err, "has already reached step 400 of 300")


def test_sigterm_checkpoints_and_resume_finishes(tmp_path):
    """A preempted run (SIGTERM) saves where it is, exits 130, and resumes to the end."""
    import signal
    import subprocess
    import sys
    import time

    run_dir = tmp_path / "pre"
    cmd = [sys.executable, "-m", "robustrl", *TRAIN, "--env", "Pendulum-v1", "--steps", "100000"]
    cmd += ["--out", str(tmp_path), "--name", "pre", "--set", "learning_starts=100"]
    cmd += [
        "--set",
        "sac.hidden_sizes=[16]",
        "--set",
        "eval_every=0",
        "--set",
        "checkpoint_every=200",
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    latest = run_dir / "checkpoints" / "latest.json"
    deadline = time.time() + 120
    while not latest.exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    step = json.loads(latest.read_text())["step"]
    assert step >= 200 and f"saved step {step}" in err and "--resume" in err
    assert robustrl.load(run_dir).step == step
    robustrl.resume(run_dir, steps=step + 100, progress=False)
    assert json.loads(latest.read_text())["step"] == step + 100


def test_quickstart_trains_sac_and_valt_eps_attacks_both_and_writes_a_report(tmp_path, capsys):
    code, out, err = run_cli(
        capsys,
        "quickstart",
        "--steps",
        "1500",
        "--episodes",
        "2",
        "--out",
        str(tmp_path),
        "--quiet",
    )
    assert code == 0, err
    runs = sorted(p for p in tmp_path.iterdir() if p.name.startswith("Pendulum-v1"))
    assert [json.loads((r / "config.json").read_text())["config"]["algo"] for r in runs] == [
        "sac",
        "valt-eps-sac",
    ]
    for run in runs:
        record = json.loads((run / "eval" / "attacks.json").read_text())
        assert record["eps"] == 0.2
        assert set(record["results"]) == {"none", "random", "mad", "pgd-minq"}
    report = (tmp_path / "quickstart_report_s0" / "report.md").read_text()
    assert "VALT-EPS-SAC" in report and "SAC" in report
    assert (tmp_path / "quickstart_report_s0" / "report.png").stat().st_size > 0
    assert out.count("<- worst") == 2 and "report:" in out


def test_train_a_robust_method_from_the_command_line(capsys, tmp_path):
    """``--algo valt-soft-sac`` with ``--set`` keys of its adversary: the run records them and
    logs the regulariser and the adversary's own metrics."""
    code, out, err = run_cli(
        capsys,
        *TRAIN,
        "--algo", "valt-soft-sac", "--env", "Pendulum-v1", "--steps", "400",
        "--out", str(tmp_path), "--name", "soft",
        "--set", "eps=0.1", "--set", "learning_starts=200", "--set", "sac.hidden_sizes=[32,32]",
        "--set", "adversary.hidden_sizes=[16]", "--set", "adversary.in_target=false",
    )  # fmt: skip
    assert code == 0, err
    config = json.loads((tmp_path / "soft" / "config.json").read_text())["config"]
    assert config["algo"] == "valt-soft-sac" and config["adversary"]["eps"] == 0.1
    assert config["adversary"]["in_target"] is False
    header = (tmp_path / "soft" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"reg_loss", "adversary_log_prob", "adversary_temperature"} <= set(header)
