"""Training end to end: learning, determinism, checkpoints, resume, evaluation."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import robustrl
from robustrl import checkpoint
from robustrl.training import Trainer

TIMING = {"steps_per_s", "time_s"}


def read_csv(path, drop=()):
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def test_same_seed_gives_identical_metrics(tmp_path, tiny):
    a = robustrl.train(tiny(seed=3), out=tmp_path, name="a", progress=False)
    b = robustrl.train(tiny(seed=3), out=tmp_path, name="b", progress=False)
    c = robustrl.train(tiny(seed=4), out=tmp_path, name="c", progress=False)
    metrics_a = read_csv(a / "metrics.csv", TIMING)
    assert len(metrics_a) == 6 and metrics_a[-1]["critic_loss"]
    assert metrics_a == read_csv(b / "metrics.csv", TIMING)
    assert read_csv(a / "evaluations.csv") == read_csv(b / "evaluations.csv")
    assert metrics_a != read_csv(c / "metrics.csv", TIMING)


def test_run_directory_contents(tmp_path, tiny):
    run_dir = robustrl.train(tiny(), out=tmp_path, name="run", progress=False)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["config"]["env"] == "Pendulum-v1" and config["config"]["sac"]["gamma"] == 0.99
    assert config["spaces"]["obs_dim"] == 3 and config["versions"]["torch"] == torch.__version__
    assert [r["step"] for r in read_csv(run_dir / "evaluations.csv")] == ["0", "300", "600"]
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    folder = checkpoint.latest(run_dir)
    assert folder.name == "step_000000600"
    model = checkpoint.read_tensors(folder / "model.safetensors")
    optim = checkpoint.read_tensors(folder / "optim.safetensors")
    state = json.loads((folder / "state.json").read_text())
    for key in (
        "actor.net.0.weight",
        "critic.layers.0.weight",
        "critic_target.layers.0.weight",
        "log_alpha",
        "normalizer.mean",
        "normalizer.var",
        "normalizer.count",
    ):
        assert key in model, key
    assert "rng.torch" in optim and any(
        k.startswith("critic_optim.") and k.endswith("exp_avg") for k in optim
    )
    assert state["step"] == 600 and set(state["rng"]) >= {"warmup", "replay", "env"}
    assert not (run_dir / "checkpoints" / "buffer.safetensors").exists()


def test_checkpoint_load_gives_identical_actions(tmp_path, tiny):
    trainer = Trainer(tiny(), tmp_path / "run", progress=False)
    run_dir = trainer.run()
    policy = robustrl.load(run_dir)
    obs = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32) * 5
    np.testing.assert_array_equal(
        policy.act(obs, deterministic=True), trainer.policy.act(obs, deterministic=True)
    )
    torch.manual_seed(5)
    sampled = policy.act(obs, deterministic=False)
    torch.manual_seed(5)
    np.testing.assert_array_equal(sampled, trainer.policy.act(obs, deterministic=False))
    assert policy.act(obs[0]).shape == (1,)
    assert np.all(np.abs(sampled) <= 2.0)  # Pendulum's torque bound, in env units
    np.testing.assert_array_equal(policy.normalizer.mean, trainer.normalizer.mean)


def test_resume_with_buffer_reproduces_the_uninterrupted_run(tmp_path, tiny, full_and_cut):
    # Pendulum episodes last 200 steps: the checkpoint at 400 is at an episode boundary, where
    # resume is exact (mid-episode, resume starts a new episode).
    config = tiny(steps=800, checkpoint_every=400, eval_every=400)
    full, cut = full_and_cut(config, 400)
    assert json.loads((cut / "checkpoints" / "latest.json").read_text())["step"] == 400
    robustrl.resume(cut, save_buffer=True, progress=False)
    assert read_csv(cut / "metrics.csv", TIMING) == read_csv(full / "metrics.csv", TIMING)
    assert read_csv(cut / "evaluations.csv") == read_csv(full / "evaluations.csv")
    a = checkpoint.read_tensors(checkpoint.latest(full) / "model.safetensors")
    b = checkpoint.read_tensors(checkpoint.latest(cut) / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_resume_without_buffer_refills_and_continues_counters(tmp_path, tiny, capsys):
    run_dir = robustrl.train(tiny(steps=300), out=tmp_path, name="r", progress=False)
    robustrl.resume(run_dir, steps=700, progress=True)
    message = capsys.readouterr()
    assert "without a saved replay buffer" in message.out + message.err
    state = json.loads((checkpoint.latest(run_dir) / "state.json").read_text())
    assert state["step"] == 700 and state["refill_steps"] == 200
    steps = [int(r["step"]) for r in read_csv(run_dir / "metrics.csv")]
    assert steps == [100, 200, 300, 400, 500, 600, 700]
    assert [r["step"] for r in read_csv(run_dir / "evaluations.csv")] == ["0", "300", "600"]
    assert json.loads((run_dir / "config.json").read_text())["config"]["steps"] == 700


def test_resume_drops_log_rows_written_after_the_checkpoint(tmp_path, tiny, monkeypatch):
    config = tiny(steps=600, checkpoint_every=300, log_every=100)
    run_dir = robustrl.train(config, out=tmp_path, name="r", progress=False)
    # pretend the process died at step 600 before its final checkpoint: drop it
    (run_dir / "checkpoints" / "latest.json").write_text(
        json.dumps({"step": 300, "dir": "step_000000300"})
    )
    robustrl.resume(run_dir, progress=False)
    steps = [int(r["step"]) for r in read_csv(run_dir / "metrics.csv")]
    assert steps == [100, 200, 300, 400, 500, 600]


def test_evaluate_run_writes_clean_json(tmp_path, tiny):
    run_dir = robustrl.train(tiny(), out=tmp_path, name="e", progress=False)
    result = robustrl.evaluate_run(run_dir, episodes=3, deterministic=True, seed=1)
    record = json.loads((run_dir / "eval" / "clean.json").read_text())
    assert record["episodes"] == 3 and len(record["returns"]) == 3
    assert record["mean"] == pytest.approx(np.mean(record["returns"])) == pytest.approx(result.mean)
    assert record["checkpoint_step"] == 600 and record["deterministic"] is True
    again = robustrl.evaluate_run(run_dir, episodes=3, deterministic=True, seed=1)
    assert again.returns == result.returns


def test_time_limit_truncation_keeps_the_bootstrap(tmp_path, tiny):
    """Only a true termination stores ``terminated = 1`` (no bootstrap); a time-limit
    truncation stores 0, so the critic target keeps ``gamma V(s')``. Checked on the transitions
    of the main loop and of the refill that a resume without a saved buffer does."""
    config = tiny(
        env="TerminatesOrTruncates-v0",
        steps=200,
        learning_starts=200,
        eval_every=0,
        checkpoint_every=100,
        **{"normalizer.enabled": False},
    )
    run_dir = robustrl.train(config, out=tmp_path, name="r", save_buffer=True, progress=False)

    def check(buffer, expected_rows):
        n = expected_rows
        step, episode = buffer["next_obs"][:n, 0], buffer["next_obs"][:n, 1]
        terminal = (episode % 3 == 0) & (step == 5)
        truncated = ~terminal & (step == 10)
        assert terminal.sum() > 0 and truncated.sum() > 0
        np.testing.assert_array_equal(buffer["terminated"][:n], terminal.astype(np.float32))

    check(checkpoint.load_buffer(run_dir), 200)
    (run_dir / "checkpoints" / "buffer.safetensors").unlink()
    robustrl.resume(run_dir, steps=300, save_buffer=True, progress=False)
    check(checkpoint.load_buffer(run_dir), 300)


def test_config_records_where_each_session_ran(tmp_path, tiny):
    """config.json says where the numbers came from: git commit (when a checkout), CPU model,
    torch threads, update order, the resolved inner precision; a resume appends a session."""
    run_dir = robustrl.train(tiny(steps=300), out=tmp_path, name="r", progress=False)
    first = json.loads((run_dir / "config.json").read_text())["sessions"]
    assert len(first) == 1 and first[0]["from_step"] == 0
    assert first[0]["cpu"] and first[0]["torch_threads"] >= 1
    assert first[0]["update_order"] == "sequential" and first[0]["inner_precision"] is None
    source = Path(robustrl.__file__).resolve().parents[2]
    if (source / ".git").exists():  # an editable install from a checkout, as in CI
        assert len(first[0]["git_commit"].removesuffix("+dirty")) == 40
    robustrl.resume(run_dir, steps=400, progress=False)
    sessions = json.loads((run_dir / "config.json").read_text())["sessions"]
    assert sessions[0] == first[0] and sessions[1]["from_step"] == 300


def test_robust_run_records_the_resolved_inner_precision(tmp_path, tiny):
    config = tiny(steps=250, **{"adversary.eps": 0.1})
    config.algo = "valt-eps-sac"
    run_dir = robustrl.train(config, out=tmp_path, name="r", progress=False)
    (session,) = json.loads((run_dir / "config.json").read_text())["sessions"]
    assert session["inner_precision"] in ("float32", "bfloat16")  # "auto", resolved
