"""Run one sweep cell, in this process or in a child process, and record how it ended.

On disk, under the sweep directory `runs/<experiment>/`:

    <cell-id>/               a finished cell: an ordinary run directory plus `cell.json`, renamed
                             into place by `run.execute` only once complete (so it is atomic)
    .<cell-id>.partial/      a cell being written, or one that was killed: never read, removed on retry
    <cell-id>.failed.json    the last failure of a cell (error type, message, traceback tail)
    logs/<cell-id>.log       everything the cell printed (training logs, warnings)

A cell counts as finished only when `<cell-id>/metrics.json` and `<cell-id>/cell.json` exist.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import traceback
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from tunelab.artifacts import NO_ARTIFACT_FILE
from tunelab.config import validate_experiment
from tunelab.held_out_dev import HELD_OUT_FILE, read_held_out
from tunelab.outputs import label_outputs
from tunelab.prompts import score_cache
from tunelab.run import METRICS_FILE, execute, prepare, score, write_predictions

CELL_FILE = "cell.json"
DEV_PREDICTIONS_FILE = "dev_predictions.jsonl"
LABEL_SCORE_TASKS = ("classification", "pair_classification", "multiple_choice")
FAILED_SUFFIX = ".failed.json"


def cell_dir(root: Path, cell_id: str) -> Path:
    return Path(root) / cell_id


def failed_path(root: Path, cell_id: str) -> Path:
    return Path(root) / f"{cell_id}{FAILED_SUFFIX}"


def log_path(root: Path, cell_id: str) -> Path:
    return Path(root) / "logs" / f"{cell_id}.log"


def is_finished(root: Path, cell_id: str) -> bool:
    directory = cell_dir(root, cell_id)
    return (directory / METRICS_FILE).is_file() and (directory / CELL_FILE).is_file()


def write_json_atomic(path: Path, data) -> None:
    """Write to a temporary name, then rename: a reader sees the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class CellStrategy:
    """Wraps a cell's strategy: after `fit`, makes sure a dev score exists and stamps `cell.json`.

    Hyper-parameter search picks by the dev metric; strategies that do not train (zero-shot) report
    none, so the sweep scores the dev split itself. `cell.json` is written into the staging
    directory, so it appears together with the rest of the run, atomically.
    """

    def __init__(self, inner, meta: dict, config):
        self.inner, self.meta, self.config = inner, meta, config

    def fit(self, splits, run_dir: Path):
        predictor, costs = self.inner.fit(splits, run_dir)
        dev_rows, dev_outputs = self.score_dev(predictor, costs, splits)
        if splits.dev and self.config.task.type in LABEL_SCORE_TASKS and not self.config.tasks:
            # the label scores on dev let an `ensemble` entry weigh this cell against others without its weights
            if not dev_rows:
                multiple_choice = self.config.task.type == "multiple_choice"
                dev_rows, dev_outputs = splits.dev, held_out_outputs(run_dir, costs, splits.dev, multiple_choice)
            write_predictions(Path(run_dir) / DEV_PREDICTIONS_FILE, dev_rows, dev_outputs or predictor.predict(dev_rows))
        costs.setdefault("num_dev", len(splits.dev))
        write_json_atomic(Path(run_dir) / CELL_FILE, self.meta)
        if not self.meta.get("save_artifacts", True):
            predictor = ResultsOnly(predictor)
        return predictor, costs

    def score_dev(self, predictor, costs: dict, splits) -> tuple[list[dict], list[dict]]:
        """Set `costs["best_dev"]` where the strategy left none or the cell stands for every seed; returns the dev
        rows and outputs it predicted for that ([], [] when the strategy's own dev score stands)."""
        metric = self.config.train.metric_for_best or self.config.metrics[0]
        dev_splits = self.dev_splits(splits)
        if len(dev_splits) > 1:  # a cell standing for every seed: scored on each seed's dev split
            dev_rows, dev_outputs, scores = [], [], {}
            for seed, dev in dev_splits.items():
                outputs = predictor.predict(dev)
                scores[seed] = score(self.config, dev, outputs)
                dev_rows, dev_outputs = dev_rows + dev, dev_outputs + outputs
            costs["dev_own_seed"] = costs.get("best_dev")
            costs["dev_per_seed"] = scores
            costs["best_dev"] = mean_scores(list(scores.values()))
            costs["dev_scored_by"] = f"sweep: the mean over the dev splits of seeds {', '.join(map(str, scores))}"
            return dev_rows, dev_outputs
        if splits.dev and metric not in (costs.get("best_dev") or {}):
            dev_outputs = predictor.predict(splits.dev)
            costs["best_dev"] = score(self.config, splits.dev, dev_outputs)
            costs["dev_scored_by"] = "sweep"
            return splits.dev, dev_outputs
        return [], []

    def dev_splits(self, splits) -> dict[int, list[dict]]:
        """seed → its K-shot dev split. A cell that stands for every seed (zero-shot prompting: no seed changes its
        result) is scored on every seed's dev split, as the rows beside it are (their mean over seeds): one draw of
        32 dev examples, easier or harder than the others, must not decide the comparison on its own."""
        own = self.config.train.seed
        seeds = self.meta.get("dev_seeds") or []
        if len(seeds) < 2 or not self.config.data.k_shot or not splits.dev:
            return {own: splits.dev}
        from tunelab.data.splits import load_splits

        return {seed: splits.dev if seed == own else load_splits(self.config.data, self.config.task, seed).dev
                for seed in seeds}


def held_out_outputs(run_dir: Path, costs: dict, dev: list[dict], multiple_choice: bool = False) -> list[dict]:
    """The dev outputs the cell's held-out dev score was computed from (each example's distribution from the
    checkpoint chosen on the other folds of dev), so an ensemble's dev score is held out alike; [] without them.
    Multiple choice records choice slots (each question has its own choices): named here by the question's."""
    record = read_held_out(Path(run_dir) / HELD_OUT_FILE) if costs.get("held_out_dev") else None
    if not record or len(record["probabilities"]) != len(dev):
        return []
    if multiple_choice:
        return [label_outputs([probs[: len(row["choices"])]], row["choices"])[0]
                for probs, row in zip(record["probabilities"], dev)]
    return label_outputs(record["probabilities"], record["label_names"])


def mean_scores(scores: list[dict]) -> dict:
    """The mean of each numeric metric present in every seed's scores."""
    keys = [k for k, v in scores[0].items() if isinstance(v, (int, float)) and all(k in s for s in scores)]
    return {k: sum(s[k] for s in scores) / len(scores) for k in keys}


class ResultsOnly:
    """A predictor whose artifact is not written (`sweep.save_artifacts: false`)."""

    def __init__(self, inner):
        self.inner = inner

    def predict(self, examples: list[dict]) -> list[dict]:
        return self.inner.predict(examples)

    def save(self, directory: Path) -> None:
        (Path(directory) / NO_ARTIFACT_FILE).write_text(
            "sweep.save_artifacts was false: this cell kept its results but not its trained weights.\n", encoding="utf-8")


def run_cell(meta: dict, root: Path, source: str) -> dict:
    """Prepare and execute one cell into `root/<id>` (atomic); returns its metrics; raises on failure."""
    print(f"tunelab: cell {meta['id']} started in process {os.getpid()}", flush=True)
    where = f"{source} (sweep cell {meta['id']})"
    config = validate_experiment(meta["config"], source=where).located_at(where)
    prepared = prepare(config)
    wrapped = replace(prepared, strategy=CellStrategy(prepared.strategy, meta, prepared.config))  # the rest as prepared
    with score_cache.kept_in(Path(root) / score_cache.CACHE_DIR if meta.get("reuse_scores", True) else None):
        result = execute(wrapped, cell_dir(root, meta["id"]))
    print(f"tunelab: cell {meta['id']} finished", flush=True)  # once per completed training, in the cell's log
    return result


def record_failure(root: Path, meta: dict, error_type: str, message: str, tb: str = "") -> None:
    summary = {k: meta.get(k) for k in ("id", "group", "strategy", "method", "family", "k_shot", "seed", "variant", "search")}
    summary.update(
        error_type=error_type, message=message, traceback=tb[-4000:],
        log=str(log_path(root, meta["id"]).relative_to(root)), time=datetime.now().isoformat(timespec="seconds"),
    )
    write_json_atomic(failed_path(root, meta["id"]), summary)


def clear_failure(root: Path, cell_id: str) -> None:
    failed_path(root, cell_id).unlink(missing_ok=True)


def run_cell_here(meta: dict, root: Path, source: str) -> bool:
    """In this process, output into the cell's log. True on success; a failure is recorded, not raised.

    KeyboardInterrupt (and SystemExit) pass through: an interrupted sweep stops, and `execute`
    has already removed the half-written staging directory.
    """
    log = log_path(root, meta["id"])
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as handle, contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
        try:
            run_cell(meta, root, source)
        except Exception as err:  # noqa: BLE001 — any failure of one cell is recorded; the sweep goes on
            tb = traceback.format_exc()
            handle.write(tb)
            record_failure(root, meta, type(err).__name__, str(err), tb)
            return False
    clear_failure(root, meta["id"])
    return True


def child_main(meta: dict, root: str, source: str, lifeline=None, threads: int | None = None) -> None:
    """Entry point of a cell's own process: all output (C level too) goes to the cell's log. `threads`: the
    torch threads it may use (cells running side by side share the cores out; None: torch's default).

    SIGTERM (the sweep stopping, or dying) raises KeyboardInterrupt, so `execute` removes the
    half-written staging directory and the process exits cleanly.
    """
    signal.signal(signal.SIGTERM, _interrupt)
    if lifeline is not None:
        die_with_parent(lifeline)
    log = log_path(Path(root), meta["id"])
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush(), sys.stderr.flush()
    os.dup2(fd, 1), os.dup2(fd, 2)
    os.close(fd)
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        run_cell(meta, Path(root), source)
    except Exception as err:  # noqa: BLE001
        tb = traceback.format_exc()
        print(tb, file=sys.stderr, flush=True)
        record_failure(Path(root), meta, type(err).__name__, str(err), tb)
        sys.exit(1)
    sys.stdout.flush(), sys.stderr.flush()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def die_with_parent(lifeline) -> None:
    """Stop this cell when the sweep process dies, even by SIGKILL, so no orphan trains on.

    `lifeline` is the read end of a pipe whose only write end the sweep process holds: its death
    closes the pipe and the read returns EOF. (The fork server cannot serve as the signal: every
    cell process holds its keep-alive pipe, so it outlives the sweep while a cell runs.)
    """
    import threading

    def watch() -> None:
        try:
            lifeline.recv()
        except (EOFError, OSError):
            pass
        os.kill(os.getpid(), signal.SIGTERM)  # → KeyboardInterrupt in the main thread: clean stop

    threading.Thread(target=watch, name="tunelab-lifeline", daemon=True).start()
