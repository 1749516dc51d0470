"""`tunelab compare`: run every unfinished cell of a sweep, resumably (here: local_executor.py; on Ray: ray_executor.py).

Re-running the same command skips finished cells (see cell.py for what "finished" means) and
retries failed ones. A finished cell whose stored configuration differs from what the sweep now
asks for is an error, so one leaderboard never mixes two configurations. One sweep at a time may
write a sweep directory (a lock file says so).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import signal
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from rich.console import Console

from tunelab.config import ExperimentConfig
from tunelab.errors import ConfigError, UserError
from tunelab.methods import get_strategy
from tunelab.model_checks import check_model
from tunelab.run import COSTS_FILE, METRICS_FILE
from tunelab.sweep.cell import CELL_FILE, cell_dir, failed_path, is_finished, write_json_atomic
from tunelab.sweep.expand import Cell, config_changes, expand
from tunelab.sweep.fingerprint import cell_fingerprints, reconcile_data
from tunelab.sweep.local_executor import run_locally, workers_line
from tunelab.sweep.preflight import cell_experiment, check_setups
from tunelab.sweep.progress import SweepDisplay
from tunelab.sweep.schema import SweepConfig, parse_sweep

SWEEP_FILE = "sweep.json"
LOCK_FILE = ".lock"


@dataclass
class SweepOutcome:
    root: Path
    cells: list[Cell]
    ran: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)


def sweep_root(config: ExperimentConfig, out: Path | None = None) -> Path:
    return Path(out) if out else Path(config.output_dir) / config.name


def plan_sweep(config: ExperimentConfig) -> tuple[SweepConfig, list[Cell]]:
    """Validate the sweep and expand it (no model or data is touched)."""
    sweep = parse_sweep(config)
    return sweep, expand(config, sweep)


def checked_plan(config: ExperimentConfig, out: Path | None = None) -> tuple[SweepConfig, list[Cell], Path]:
    """(sweep, cells, root) after every check a sweep makes before its first cell — finished cells unchanged,
    data loaded and K-shot sampled, models' configs read, each strategy set-up prepared without weights — and
    writing nothing: a sweep that cannot start leaves nothing new behind, and an earlier sweep's plan
    (sweep.json) stays as its report read it. `compare --dry-run` makes the same checks."""
    sweep, cells = plan_sweep(config)
    prints: dict = {}
    cells = [replace(c, data_sha256=cell_fingerprints(c.config, prints)) for c in cells]
    root = sweep_root(config, out)
    check_unchanged(root, cells)
    check_data(unfinished(root, cells), config.source)
    check_models(unfinished(root, cells), config, sweep)
    labels = [entry.label for entry in sweep.strategies]
    check_setups(unfinished(root, cells), lambda cell: cell_experiment(config, cell, labels.index(cell.strategy)))
    return sweep, cells, root


def run_sweep(config: ExperimentConfig, out: Path | None = None, console: Console | None = None) -> SweepOutcome:
    sweep, cells, root = checked_plan(config, out)
    with cell_executor(config, sweep, unfinished(root, cells)) as execute:  # Ray: connected and checked first
        root.mkdir(parents=True, exist_ok=True)
        outcome = SweepOutcome(root, cells)
        with sweep_lock(root), stop_on_sigterm():
            check_unchanged(root, cells)  # again under the lock: another sweep may have finished cells meanwhile
            todo = unfinished(root, cells)
            write_sweep_file(root, config, sweep, cells)
            outcome.skipped = len(cells) - len(todo)
            note = workers_line(sweep.workers) if sweep.executor == "local" and todo else ""
            with SweepDisplay(len(cells), outcome.skipped, console, note) as display:
                for cell, ok in execute(todo, root, display):
                    outcome.ran += 1
                    if not ok:
                        outcome.failed.append(cell.id)
                    display.finish(cell.id, ok, summarise(root, cell.id, ok))
    return outcome


@contextlib.contextmanager
def cell_executor(config: ExperimentConfig, sweep: SweepConfig, todo: list[Cell]):
    """A function (cells, root, display) → iterator of (cell, ok), on this machine or on Ray. Ray is
    connected and the resources of the cells `todo` checked here, before the sweep directory is touched."""
    if sweep.executor == "local" or not todo:  # nothing to run: no cluster to reach
        yield lambda cells, root, display: run_locally(cells, root, config.source, display, sweep.isolation, sweep.workers)
        return
    from tunelab.sweep.ray_executor import check_resources, ray_session, run_on_ray

    requests = resource_requests(config, sweep, todo)  # the cells run later are among these
    with ray_session(sweep.ray_address, config.locate("sweep", "ray_address")) as ray:
        check_resources(ray, requests)
        yield lambda cells, root, display: run_on_ray(
            ray, cells, root, config.source, display, {c.id: requests[c.id][0] for c in cells}, sweep.retries)


def resource_requests(config: ExperimentConfig, sweep: SweepConfig, cells: list[Cell]) -> dict:
    """cell id → ({"CPU": n, "GPU": g}, where the file sets that request)."""
    index = {entry.label: i for i, entry in enumerate(sweep.strategies)}
    requests = {}
    for cell in cells:
        i = index[cell.strategy]
        entry = sweep.strategies[i]
        key = ("sweep", "strategies", i, "resources") if entry.resources else ("sweep", "resources")
        want = entry.resources or sweep.resources
        requests[cell.id] = ({"CPU": want.num_cpus, "GPU": want.num_gpus}, f"{config.locate(*key)}: {'.'.join(map(str, key))}")
    return requests


def unfinished(root: Path, cells: list[Cell]) -> list[Cell]:
    return [cell for cell in cells if not is_finished(root, cell.id)]


def check_models(cells: list[Cell], config: ExperimentConfig, sweep: SweepConfig) -> None:
    """Check every distinct model set-up against its config.json (no weights), as `run.prepare` would in
    each cell: a model.max_length the model cannot read, or a model folder without config.json, stops
    the sweep at once instead of failing every cell in turn."""
    labels = [entry.label for entry in sweep.strategies]
    seen = set()
    for cell in cells:
        key = json.dumps(cell.config["model"], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        try:
            check_model(cell_experiment(config, cell, labels.index(cell.strategy)))
        except UserError as err:
            raise type(err)(f"sweep cell {cell.id}: {err}") from None


def check_data(cells: list[Cell], source: str) -> None:
    """Load and K-shot sample every distinct data set-up before any cell runs: a missing file or a K
    larger than a class stops the sweep at once (exit 2), instead of failing every cell in turn."""
    from tunelab.config import validate_experiment
    from tunelab.data import load_splits
    from tunelab.training.tasks import task_experiments

    seen = set()
    for cell in cells:
        key = json.dumps([cell.config["data"], cell.config["task"], cell.config.get("tasks"), cell.seed], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        config = validate_experiment(cell.config, source=f"{source} (sweep cell {cell.id})")
        try:
            for experiment in [run.experiment for run in task_experiments(config)] or [config]:  # each task's data
                load_splits(experiment.data, experiment.task, experiment.train.seed)
        except UserError as err:
            raise type(err)(f"sweep cell {cell.id} (K={cell.k_shot}, seed {cell.seed}): {err}") from None


def summarise(root: Path, cell_id: str, ok: bool) -> str:
    if ok:
        metrics = json.loads((cell_dir(root, cell_id) / METRICS_FILE).read_text(encoding="utf-8"))["test"]
        return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    failure = json.loads(failed_path(root, cell_id).read_text(encoding="utf-8"))
    return f"failed: {failure['error_type']}: {failure['message'].splitlines()[0] if failure['message'] else ''}"


def check_unchanged(root: Path, cells: list[Cell]) -> None:
    problems = []
    for cell in cells:
        if not is_finished(root, cell.id):
            continue
        meta = json.loads((cell_dir(root, cell.id) / CELL_FILE).read_text(encoding="utf-8"))
        stored = meta.get("config", {})
        changes = reconcile_data(stored, meta.get("data_sha256") or {}, cell.config, cell.data_sha256)
        changes += config_changes(settings_read(cell, stored), settings_read(cell, cell.config))
        changes += teacher_changes(root, cell)
        changes += dev_seed_changes(meta, cell)
        changes += strategy_changes(root, cell)
        if changes:
            problems.append(f"{cell.id}: {'; '.join(changes[:3])}")
    if problems:
        listed = "\n  ".join(problems[:10]) + ("\n  ..." if len(problems) > 10 else "")
        raise ConfigError(
            f"{len(problems)} finished cell(s) in {root} were run with a different configuration:\n  {listed}\n"
            f"Give the experiment a new `name:` (or --out), or delete those cell directories to re-run them."
        )


READ_WITHOUT_TRAINING = ("seed", "metric_for_best")
"""The train: settings a strategy that trains nothing still reads (demonstrations drawn by seed, the dev metric)."""


def settings_read(cell: Cell, config: dict) -> dict:
    """The cell's config without the settings its strategy cannot read: a prompting cell reads no optimiser
    setting. init's files keep the learning rate of their one trained entry at the top, and tuning it must not
    refuse to resume the finished zero-shot cells beside it."""
    if getattr(get_strategy(cell.method).cls, "trains", True) or "train" not in config:
        return config
    return {**config, "train": {k: v for k, v in config["train"].items() if k in READ_WITHOUT_TRAINING}}


def dev_seed_changes(stored_meta: dict, cell: Cell) -> list[str]:
    """A cell standing for every seed is scored on each seed's dev split; one finished before that (or for other
    seeds) has a dev score the rows beside it are not comparable with."""
    stored, expected = list(stored_meta.get("dev_seeds") or []), list(cell.dev_seeds)
    if stored == expected:
        return []
    def splits(seeds: list) -> str:
        return f"the dev splits of seeds {seeds}" if seeds else f"seed {stored_meta.get('seed')}'s dev split alone"
    return [f"its dev score is from {splits(stored)}, this sweep scores it on {splits(expected)}; delete it to "
            f"score it again (cells that stand for every seed are scored on each seed's dev split)"]


def strategy_changes(root: Path, cell: Cell) -> list[str]:
    """What the cell's strategy knows makes a finished result stale though its config reads the same: the
    optional classmethod `finished_result_changes(strategy_config, costs)` (ensemble: members averaged before
    this tunelab calibrated them)."""
    hook = getattr(get_strategy(cell.method).cls, "finished_result_changes", None)
    if hook is None:
        return []
    costs = json.loads((cell_dir(root, cell.id) / COSTS_FILE).read_text(encoding="utf-8"))
    return hook(cell.config.get("strategy") or {}, costs)


def teacher_changes(root: Path, cell: Cell) -> list[str]:
    """A finished cell that read other cells (a distill student its teacher, an ensemble its members) is stale
    when one of them will run again or finished again after it: it read a model that no longer exists, and its
    config alone cannot tell."""
    changes = []
    for linked in cell.after:
        if not is_finished(root, linked):
            changes.append(f"the cell it read, {linked}, is not finished and will run again, so this cell read an "
                           f"earlier model")
        elif (cell_dir(root, linked) / METRICS_FILE).stat().st_mtime > (cell_dir(root, cell.id) / METRICS_FILE).stat().st_mtime:
            changes.append(f"the cell it read, {linked}, finished again after it, so this cell read an earlier model")
    return changes


def write_sweep_file(root: Path, config: ExperimentConfig, sweep: SweepConfig, cells: list[Cell]) -> None:
    """What the report needs besides the cells' own directories: the plan and the resolved config."""
    write_json_atomic(root / SWEEP_FILE, {
        "name": config.name,
        "source": config.source,
        "written": datetime.now().isoformat(timespec="seconds"),
        "isolation": sweep.isolation,
        "executor": sweep.executor,
        "metric": config.train.metric_for_best or config.metrics[0],
        "metrics": config.metrics,
        "config": config.model_dump(mode="json"),
        "cells": [{k: v for k, v in cell.meta().items() if k != "config"} for cell in cells],
    })


@contextlib.contextmanager
def sweep_lock(root: Path):
    handle = open(root / LOCK_FILE, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(f"another `tunelab compare` is running on {root}; wait for it or use another --out") from None
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


@contextlib.contextmanager
def stop_on_sigterm():
    """`kill PID` stops the sweep like Ctrl-C: the running cell is stopped and leaves nothing finished-looking."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
