"""Sweeps: spec validation, local and Ray executors giving the same results, resuming after an
interruption, failing cells, and the median-seed report."""

import copy
import csv
import json
import os

import numpy as np
import pytest
import yaml

from robustrl import cli
from robustrl.errors import ConfigError
from robustrl.sweep import LocalExecutor, SweepDir, build_sweep_report, parse_spec, run_sweep
from robustrl.sweep.spec import config_for

TINY_TRAIN = {
    "algos": ["sac"],
    "envs": ["Pendulum-v1"],
    "seeds": [0, 1, 2],
    "steps": 400,
    "overrides": {
        "learning_starts": 200,
        "eval_every": 200,
        "eval_episodes": 2,
        "checkpoint_every": 200,
        "log_every": 100,
        "sac.hidden_sizes": [32, 32],
        "sac.batch_size": 32,
    },
}
TINY_ATTACK = {"attacks": ["random", "mad"], "eps": [0.1, 0.3], "episodes": 2, "n_envs": 2}
TIMING_COLUMNS = {"steps_per_s", "time_s"}


def tiny(train=None, attack=TINY_ATTACK, **top):
    """A sweep document: the tiny grid with ``train`` keys replaced."""
    doc = {"name": "tiny", "train": {**copy.deepcopy(TINY_TRAIN), **(train or {})}, **top}
    if attack is not None:
        doc["attack"] = copy.deepcopy(attack)
    return doc


def states(root):
    sweep = SweepDir(root)
    return {p.stem: sweep.read(p.stem) for p in sorted((sweep.root / "cells").glob("*.json"))}


def rows_without_timing(path):
    with open(path, newline="") as f:
        return [
            {k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)
        ]


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The tiny grid (3 train + 6 attack cells) run once through `robustrl sweep`, 1 worker."""
    folder = tmp_path_factory.mktemp("sweep")
    spec = folder / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny()))
    out = folder / "out"
    rc = cli.main(["sweep", str(spec), "--out", str(out), "--quiet"])
    return rc, out, spec


# ---------------------------------------------------------------- spec


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (tiny({"algos": ["sac", "sacc"]}), "train.algos: unknown algo 'sacc'"),
        (tiny({"stpes": 400}), "train: unknown key 'stpes' (did you mean 'steps'?)"),
        ({**tiny(), "trian": {}}, "top level: unknown key 'trian' (did you mean 'train'?)"),
        (tiny({"envs": ["NoSuchEnv-v0"]}), "train.envs: unknown environment 'NoSuchEnv-v0'"),
        (
            tiny({"overrides": {"sac.hiden_sizes": [8]}}),
            "unknown train.overrides key 'sac.hiden_sizes' (did you mean 'sac.hidden_sizes'?)",
        ),
        (tiny({"per_algo": {"td3": {"steps": 10}}}), "train.per_algo: 'td3' is not in train.algos"),
        (tiny({"seeds": [0, -1]}), "train.seeds: expected an integer >= 0, got -1"),
        (tiny({"preset": "paper"}), "preset 'paper' has no settings for 'Pendulum-v1'"),
        (
            tiny(attack={**TINY_ATTACK, "eps": [0.1, -0.2]}),
            "attack.eps: eps must be a finite number >= 0",
        ),
        (tiny(attack={**TINY_ATTACK, "eps": None}), "the paper has none for Pendulum-v1"),
        (tiny(attack={**TINY_ATTACK, "attacks": ["pgd"]}), "attack.attacks: unknown attack 'pgd'"),
        (
            tiny(attack={**TINY_ATTACK, "attacks": ["random", "sa-rl"]}),
            "attack.budget: sa-rl need a budget",
        ),
        (
            tiny(attack={**TINY_ATTACK, "settings": {"mad": {"stepz": 3}}}),
            "attack 'mad' has no setting 'stepz'",
        ),
        (tiny(resources={"threads": 0}), "resources.threads: expected an integer >= 1, got 0"),
    ],
)
def test_spec_errors_are_one_line_naming_the_problem(doc, message):
    with pytest.raises(ConfigError) as info:
        parse_spec(doc, source="grid.yaml")
    text = str(info.value)
    assert text.startswith("grid.yaml: ")
    assert message in text
    assert "\n" not in text


def test_spec_expands_the_grid():
    doc = tiny(
        {
            "algos": ["sac", "valt-eps-sac"],
            "seeds": 2,
            "overrides": {**TINY_TRAIN["overrides"], "eps": 0.2},
            "per_env": {"Pendulum-v1": {"sac.batch_size": 16}},
            "per_algo": {"valt-eps-sac": {"sac.batch_size": 8}},
            "exclude": [{"algo": "sac", "seed": 1}],
        },
        attack={**TINY_ATTACK, "attacks": ["random", "mad,pgd-minq"], "split": True},
        resources={"threads": 2, "attack": {"threads": 1}},
    )
    spec = parse_spec(doc)
    ids = [c["id"] for c in spec.train_cells]
    assert ids == [
        "Pendulum-v1_sac_s0",
        "Pendulum-v1_valt-eps-sac_s0",
        "Pendulum-v1_valt-eps-sac_s1",
    ]
    # overrides, then per_env, then per_algo
    assert config_for(spec.train_cells[0]).sac.batch_size == 16
    assert config_for(spec.train_cells[1]).sac.batch_size == 8
    assert config_for(spec.train_cells[1]).adversary.eps == 0.2
    # split: one cell per item of `attacks` per (victim, eps); groups stay together
    assert len(spec.attack_cells) == 3 * 2 * 2
    first = spec.attack_cells[:2]
    assert [c["attacks"] for c in first] == [["random"], ["mad", "pgd-minq"]]
    assert [c["id"] for c in first] == [
        "Pendulum-v1_sac_s0_eps0.1_random",
        "Pendulum-v1_sac_s0_eps0.1_mad_pgd-minq",
    ]
    assert spec.resources["train"].threads == 2 and spec.resources["train"].num_cpus == 2
    assert spec.resources["attack"].threads == 1 and spec.resources["attack"].num_cpus == 1


def test_null_eps_is_the_papers_eps_per_env():
    doc = {
        "train": {"algos": ["sac"], "envs": ["Hopper-v5", "Walker2d-v5"], "preset": "paper"},
        "attack": {"attacks": "random", "eps": [None, 0.2]},
    }
    spec = parse_spec(doc)
    assert [(c["env"], c["eps"]) for c in spec.attack_cells] == [
        ("Hopper-v5", 0.075),
        ("Hopper-v5", 0.2),
        ("Walker2d-v5", 0.05),
        ("Walker2d-v5", 0.2),
    ]
    assert spec.train_cells[0]["steps"] is None  # the preset's 500k
    assert config_for(spec.train_cells[0]).steps == 500_000


def test_shipped_sweeps_are_valid():
    from robustrl.sweep import load_spec

    smoke = load_spec("sweeps/smoke.yaml")
    paper = load_spec("sweeps/paper_table1.yaml")
    assert len(smoke.cells) > 0
    # the paper's Table 1: 4 envs x 5 SAC methods x 8 seeds
    assert len(paper.train_cells) == 4 * 5 * 8
    assert {c["eps"] for c in paper.attack_cells} == {0.075, 0.05, 0.15}


# ---------------------------------------------------------------- running


def test_local_sweep_runs_every_cell(local_sweep):
    rc, out, _ = local_sweep
    assert rc == 0
    found = states(out)
    assert len(found) == 3 + 6
    assert {s.status for s in found.values()} == {"done"}
    assert all(s.attempts == 1 and s.seconds > 0 and s.error is None for s in found.values())
    sweep = SweepDir(out)
    for seed in (0, 1, 2):
        run_dir = sweep.run_dir(f"Pendulum-v1_sac_s{seed}")
        assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["step"] == 400
        for eps in (0.1, 0.3):
            record = json.loads(
                sweep.record_path(f"Pendulum-v1_sac_s{seed}_eps{eps:g}").read_text()
            )
            assert record["eps"] == eps and record["env"] == "Pendulum-v1"
            assert set(record["results"]) == {"none", "random", "mad"}
            assert len(record["results"]["mad"]["returns"]) == 2
    log = (out / "sweep.log").read_text().splitlines()
    assert sum("] done " in line for line in log) == 9


def test_rerunning_a_finished_sweep_runs_nothing(local_sweep):
    _, out, spec = local_sweep
    before = {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    summary = run_sweep(
        parse_spec(yaml.safe_load(spec.read_text())), out, LocalExecutor(1), progress=False
    )
    assert summary.ran == 0 and summary.done == 9
    assert {p: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")} == before


def test_a_changed_cell_is_refused(local_sweep, tmp_path):
    _, out, _ = local_sweep
    changed = parse_spec(tiny({"steps": 500}))
    with pytest.raises(
        ConfigError, match="already has cell Pendulum-v1_sac_s0 with other settings"
    ):
        run_sweep(changed, out, LocalExecutor(1), progress=False)


def test_a_locked_sweep_directory_is_refused(tmp_path):
    from robustrl.sweep.runner import _lock

    handle = _lock(SweepDir(tmp_path))
    try:
        with pytest.raises(ConfigError, match="another robustrl sweep is running"):
            run_sweep(parse_spec(tiny()), tmp_path, LocalExecutor(1), progress=False)
    finally:
        handle.close()


def test_ray_gives_the_same_results_as_local(local_sweep, tmp_path):
    ray = pytest.importorskip("ray")
    from robustrl.sweep import RayExecutor

    _, local, spec = local_sweep
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    try:
        summary = run_sweep(
            parse_spec(yaml.safe_load(spec.read_text())), tmp_path, RayExecutor(), progress=False
        )
    finally:
        ray.shutdown()
    assert summary.done == 9 and not summary.failed
    ours, theirs = SweepDir(local), SweepDir(tmp_path)
    for cell in parse_spec(tiny()).cells:
        if cell["kind"] == "train":
            for name in ("metrics.csv", "evaluations.csv"):
                expected = rows_without_timing(ours.run_dir(cell["id"]) / name)
                assert rows_without_timing(theirs.run_dir(cell["id"]) / name) == expected
        else:
            a = json.loads(ours.record_path(cell["id"]).read_text())["results"]
            b = json.loads(theirs.record_path(cell["id"]).read_text())["results"]
            assert {k: v["returns"] for k, v in a.items()} == {
                k: v["returns"] for k, v in b.items()
            }


def test_ctrl_c_stops_cleanly_and_a_rerun_runs_only_the_missing_cells(tmp_path):
    """Ctrl-C in the sweep while the second train cell is running, after its first checkpoint:
    its worker gets SIGINT and checkpoints; the rerun resumes it and runs the one attack cell
    left, without touching the finished cells."""
    import time

    overrides = {**TINY_TRAIN["overrides"], "eval_every": 1000, "checkpoint_every": 200}
    spec = parse_spec(
        tiny(
            {"seeds": [0, 1], "steps": 1500, "overrides": overrides},
            attack={**TINY_ATTACK, "eps": 0.1},
        )
    )
    sweep = SweepDir(tmp_path)
    fired = []

    def ctrl_c(event):
        if event.kind == "start" and event.cell["id"] == "Pendulum-v1_sac_s1" and not fired:
            fired.append(event)
            pointer = sweep.run_dir("Pendulum-v1_sac_s1") / "checkpoints" / "latest.json"
            deadline = time.time() + 60
            while not pointer.is_file() and time.time() < deadline:
                time.sleep(0.02)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, tmp_path, LocalExecutor(1), on_event=ctrl_c)
    first = states(tmp_path)
    assert first["Pendulum-v1_sac_s0"].status == "done"
    assert first["Pendulum-v1_sac_s0_eps0.1"].status == "done"
    assert first["Pendulum-v1_sac_s1"].status == "interrupted"
    assert first["Pendulum-v1_sac_s1_eps0.1"].status == "pending"
    assert not (tmp_path / ".stopping").exists()
    stopped_at = json.loads(
        (sweep.run_dir("Pendulum-v1_sac_s1") / "checkpoints" / "latest.json").read_text()
    )["step"]
    assert 200 <= stopped_at < 1500  # the worker saved a checkpoint when interrupted
    done_files = [
        tmp_path / "cells" / "Pendulum-v1_sac_s0.json",
        tmp_path / "cells" / "Pendulum-v1_sac_s0_eps0.1.json",
        sweep.run_dir("Pendulum-v1_sac_s0") / "metrics.csv",
        sweep.record_path("Pendulum-v1_sac_s0_eps0.1"),
    ]
    before = [p.stat().st_mtime_ns for p in done_files]

    summary = run_sweep(spec, tmp_path, LocalExecutor(1), progress=False)
    assert summary.ran == 2 and summary.done == 4
    assert [p.stat().st_mtime_ns for p in done_files] == before
    after = states(tmp_path)
    assert after["Pendulum-v1_sac_s0"].attempts == 1
    assert after["Pendulum-v1_sac_s1"].attempts == 2
    assert after["Pendulum-v1_sac_s1"].result["resumed_from"] == stopped_at
    assert {s.status for s in after.values()} == {"done"}


def test_interrupted_training_resumes_from_its_checkpoint(tmp_path, interrupt_after):
    """A train cell left 'running' by a killed sweep, with a checkpoint at step 200 of 400,
    continues from that checkpoint (robustrl.resume) instead of starting over."""
    import robustrl
    from robustrl.sweep.state import CellState, fingerprint

    spec = parse_spec(tiny({"seeds": [0]}, attack=None))
    cell = spec.train_cells[0]
    sweep = SweepDir(tmp_path)
    run_dir = sweep.run_dir(cell["id"])
    original = interrupt_after(200)
    with pytest.raises(KeyboardInterrupt):
        robustrl.train(config_for(cell), out=run_dir.parent, name=run_dir.name, progress=False)
    sweep.write(CellState(cell["id"], "train", fingerprint(cell), status="running", attempts=1))
    kept = rows_without_timing(run_dir / "metrics.csv")
    assert [int(r["step"]) for r in kept] == [100, 200]

    from robustrl import checkpoint

    checkpoint.save = original  # the workers are fresh processes anyway
    summary = run_sweep(spec, tmp_path, LocalExecutor(1), progress=False)
    state = sweep.read(cell["id"])
    assert summary.done == 1 and state.status == "done" and state.attempts == 2
    assert state.result["resumed_from"] == 200
    rows = rows_without_timing(run_dir / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [100, 200, 300, 400]
    assert rows[:2] == kept
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["step"] == 400


def test_a_failing_cell_is_recorded_and_does_not_stop_the_others(tmp_path):
    doc = tiny(
        {"algos": ["sac", "td3"], "seeds": [0], "per_algo": {"td3": {"env_kwargs": {"bogus": 1}}}},
        attack={**TINY_ATTACK, "attacks": ["random"], "eps": 0.1},
    )
    spec = parse_spec(doc)
    summary = run_sweep(spec, tmp_path, LocalExecutor(1), progress=False)
    assert [s.id for s in summary.failed] == ["Pendulum-v1_td3_s0"]
    assert summary.blocked == ["Pendulum-v1_td3_s0_eps0.1"]
    found = states(tmp_path)
    failed = found["Pendulum-v1_td3_s0"]
    assert failed.status == "failed" and "bogus" in failed.error and "\n" not in failed.error
    assert "Traceback" in failed.traceback
    assert found["Pendulum-v1_sac_s0"].status == "done"
    assert found["Pendulum-v1_sac_s0_eps0.1"].status == "done"
    assert found["Pendulum-v1_td3_s0_eps0.1"].status == "pending"

    # re-running retries the failed cell (it fails again) and leaves the finished ones alone
    summary = run_sweep(spec, tmp_path, LocalExecutor(1), progress=False)
    assert summary.ran == 1 and len(summary.failed) == 1
    assert states(tmp_path)["Pendulum-v1_td3_s0"].attempts == 2
    assert states(tmp_path)["Pendulum-v1_sac_s0"].attempts == 1


# ---------------------------------------------------------------- CLI and report


def test_cli_sweep_reports_bad_flags_in_one_line(capsys, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(tiny()))
    assert cli.main(["sweep", str(spec), "--backend", "ray", "--workers", "2"]) == 2
    assert "--workers is for --backend local" in capsys.readouterr().err
    assert cli.main(["sweep", str(spec), "--address", "auto"]) == 2
    assert "--address is for --backend ray" in capsys.readouterr().err
    assert cli.main(["sweep", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert "missing.yaml does not exist" in err and err.count("\n") == 1


def test_report_of_a_sweep_directory(local_sweep, tmp_path, capsys):
    _, out, _ = local_sweep
    report = tmp_path / "report"
    assert cli.main(["report", str(out), "--out", str(report)]) == 0
    assert "Median seed (paper protocol)" in capsys.readouterr().out
    for name in (
        "report.md",
        "report.html",
        "summary.csv",
        "seeds.csv",
        "cells.csv",
        "training_curves.png",
        "eps_curves.png",
        "natural_vs_worst.png",
    ):
        assert (report / name).is_file() and (report / name).stat().st_size > 0, name

    # the median seed, recomputed from the attack records
    sweep = SweepDir(out)
    records = {
        (s, eps): json.loads(sweep.record_path(f"Pendulum-v1_sac_s{s}_eps{eps:g}").read_text())
        for s in (0, 1, 2)
        for eps in (0.1, 0.3)
    }
    natural = {s: records[s, 0.1]["results"]["none"]["mean"] for s in (0, 1, 2)}
    median = sorted(natural, key=natural.get)[1]
    with open(report / "summary.csv", newline="") as f:
        rows = {(r["eps"], r["attack"]): r for r in csv.DictReader(f)}
    assert set(rows) == {
        (e, a) for e in ("0.1", "0.3") for a in ("natural", "random", "mad", "worst")
    }
    assert int(rows["0.1", "natural"]["median_seed"]) == median
    assert float(rows["0.1", "natural"]["median_mean"]) == pytest.approx(natural[median])
    worst = min(("random", "mad"), key=lambda a: records[median, 0.3]["results"][a]["mean"])
    assert rows["0.3", "worst"]["worst_attack"] == worst
    assert float(rows["0.3", "worst"]["median_mean"]) == pytest.approx(
        records[median, 0.3]["results"][worst]["mean"]
    )
    mad_means = [records[s, 0.3]["results"]["mad"]["mean"] for s in (0, 1, 2)]
    assert float(rows["0.3", "mad"]["seeds_mean"]) == pytest.approx(np.mean(mad_means))
    assert float(rows["0.3", "mad"]["seeds_std"]) == pytest.approx(np.std(mad_means))
    md = (report / "report.md").read_text()
    assert f"| Pendulum-v1 | sac | 0.1 | {median} | {natural[median]:.0f} +- " in md
    html = (report / "report.html").read_text()
    assert "<img src='training_curves.png'" in html and "<table>" in html


def test_report_rejects_a_sweep_mixed_with_runs(local_sweep, capsys):
    _, out, _ = local_sweep
    assert cli.main(["report", str(out), str(out / "runs" / "Pendulum-v1_sac_s0")]) == 2
    assert "report takes one sweep directory" in capsys.readouterr().err


def _fake_sweep(root, naturals, worst_offset=-100.0):
    """A sweep directory of Hopper-v5 SAC cells at the paper's eps with made-up records."""
    from robustrl.sweep.runner import _prepare
    from robustrl.sweep.state import CellState, fingerprint

    doc = {
        "name": "fake",
        "train": {
            "algos": ["sac"],
            "envs": ["Hopper-v5"],
            "seeds": len(naturals),
            "preset": "paper",
        },
        "attack": {"attacks": ["random", "mad"], "eps": None, "episodes": 2},
    }
    spec = parse_spec(doc)
    sweep = SweepDir(root)
    _prepare(sweep, spec)
    for cell in spec.cells:
        sweep.write(CellState(cell["id"], cell["kind"], fingerprint(cell), status="done"))
        if cell["kind"] == "attack":
            n = naturals[cell["seed"]]
            results = {
                "none": {"mean": n, "std": 1.0},
                "random": {"mean": n - 10.0, "std": 2.0},
                "mad": {"mean": n + worst_offset, "std": 3.0},
            }
            record = {"eps": cell["eps"], "env": "Hopper-v5", "results": results}
            sweep.record_path(cell["id"]).parent.mkdir(parents=True, exist_ok=True)
            sweep.record_path(cell["id"]).write_text(json.dumps(record))
    return spec


def test_report_median_of_an_even_number_of_seeds_and_the_paper_alongside(tmp_path):
    # naturals by seed: sorted 1000 (s3), 2000 (s1), 2500 (s0), 3000 (s2): lower middle = s1
    _fake_sweep(tmp_path, [2500.0, 2000.0, 3000.0, 1000.0])
    written = build_sweep_report(tmp_path)
    with open(written["csv"], newline="") as f:
        rows = {r["attack"]: r for r in csv.DictReader(f)}
    assert rows["natural"]["median_seed"] == "1"
    assert float(rows["worst"]["median_mean"]) == 1900.0 and rows["worst"]["worst_attack"] == "mad"
    # the paper's SAC on Hopper at eps 0.075: natural 3199 +- 1, MAD 3194 +- 391
    assert float(rows["natural"]["paper_mean"]) == 3199 and float(rows["mad"]["paper_std"]) == 391
    md = written["md"].read_text()
    assert "## Beside the paper's Table 1" in md
    assert (
        "| Hopper | sac | paper: SAC, 0.5M steps, -v2 | 3199 +- 1 | 3213 +- 6 | 3194 +- 391 | 2979 +- 1 |"
        in md
    )
    assert not (tmp_path / "report" / "eps_curves.png").exists()  # a single eps
    assert (tmp_path / "report" / "natural_vs_worst.png").is_file()
    assert os.path.getsize(written["html"]) > 0
