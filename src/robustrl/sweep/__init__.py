"""Sweeps: a YAML grid of training and attack cells, run resumably on this machine or on Ray.

``robustrl sweep SWEEP.yaml`` and ``robustrl report SWEEP_DIR`` call into this package:

- ``spec.py``: the YAML format (documented there) -> validated cells;
- ``state.py``: the sweep directory's layout and per-cell state files;
- ``cells.py``: running one train or attack cell (the function workers and Ray tasks run);
- ``executors.py``: local worker processes, or tasks on a Ray cluster;
- ``runner.py``: the scheduler (dependencies, resume, Ctrl-C, progress and ETA);
- ``report.py``: the median-seed robustness report (Markdown, CSV, HTML with plots), with the
  paper's Table 1 (``paper_table1.yaml``) alongside.
"""

from robustrl.sweep.executors import LocalExecutor, RayExecutor, make_executor
from robustrl.sweep.report import build_sweep_report
from robustrl.sweep.runner import Event, SweepSummary, run_sweep
from robustrl.sweep.spec import SweepSpec, load_spec, parse_spec
from robustrl.sweep.state import SweepDir, is_sweep_dir

__all__ = [
    "Event",
    "LocalExecutor",
    "RayExecutor",
    "SweepDir",
    "SweepSpec",
    "SweepSummary",
    "build_sweep_report",
    "is_sweep_dir",
    "load_spec",
    "make_executor",
    "parse_spec",
    "run_sweep",
]
