"""Sweeps for `tunelab compare`: a typed `sweep:` section, its expansion into cells, a resumable runner.

    config = load_experiment("examples/demo.yaml")
    outcome = run_sweep(config)          # runs/<name>/<cell-id>/ per cell, sweep.json beside them
"""

from tunelab.sweep.expand import Cell, expand
from tunelab.sweep.runner import SWEEP_FILE, SweepOutcome, plan_sweep, run_sweep, sweep_root
from tunelab.sweep.schema import StrategyEntry, SweepConfig, parse_sweep

__all__ = [
    "SWEEP_FILE", "Cell", "StrategyEntry", "SweepConfig", "SweepOutcome", "expand", "parse_sweep",
    "plan_sweep", "run_sweep", "sweep_root",
]
