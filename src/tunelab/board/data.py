"""What the board shows, read from a sweep directory's stored files only: no model is loaded and
nothing is written there (the report code builds the leaderboard and plots in memory).

A cell's files are reached by its id from the sweep plan and a fixed list of file names, never by
a path from the request, so no request can read outside the sweep directory.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from tunelab.errors import UserError
from tunelab.report.curves import log_curves
from tunelab.report.leaderboard import build_leaderboard, metric_keys, table
from tunelab.report.results import SWEEP_FILE, load_results, read_json

CELL_FILES = ("config.yaml", "metrics.json", "predictions.jsonl", "costs.json", "cell.json", "logs.csv")
"""The files of a finished cell the board links to (text; the weights are not served)."""
PYPLOT = threading.Lock()
"""matplotlib's pyplot keeps global state and is not thread-safe; the server answers in threads."""
LOG_TAIL_BYTES = 64_000
"""The end of a cell's log is what a reader watching a sweep wants; a whole log can be megabytes."""


def check_sweep_dir(root: Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a directory; give a sweep directory, e.g. `tunelab board runs/demo`")
    if not (root / SWEEP_FILE).is_file():
        inside = sorted(p.name for p in root.iterdir() if (p / SWEEP_FILE).is_file())
        hint = (f"it holds the sweeps {', '.join(inside)}: give one, e.g. `tunelab board {root / inside[0]}`" if inside
                else "run `tunelab compare EXPERIMENT.yaml` first, then give its runs/<name>")
        raise UserError(f"{root} is not a sweep directory (no {SWEEP_FILE}); {hint}")
    return root.resolve()


class SweepView:
    """The sweep as JSON-ready data; the plots are cached until the set of finished cells changes."""

    def __init__(self, root: Path):
        self.root = check_sweep_dir(root)
        self._plots: tuple[str, dict[str, bytes]] = ("", {})

    def summary(self) -> dict:
        results = load_results(self.root)
        rows, _ = build_leaderboard(results)
        headers, body, best = table(rows, metric_keys(results))
        finished = {c.meta["id"] for c in results.cells}
        failed = {f["id"] for f in results.failures}
        cells = []
        for meta in read_json(self.root / SWEEP_FILE)["cells"]:
            state = "finished" if meta["id"] in finished else "failed" if meta["id"] in failed else "pending"
            cells.append({"id": meta["id"], "group": meta["group"], "state": state,
                          "artifact": state == "finished" and has_artifact(self.root / meta["id"])})
        return {
            "name": results.name, "metric": results.metric, "planned": results.planned,
            "finished": len(results.cells), "failed": len(results.failures), "pending": len(results.pending),
            "version": version_of(finished, failed),
            "leaderboard": {"headers": headers, "rows": body, "best": [sorted(b) for b in best]},
            "plots": sorted(self.plots(results, rows, version_of(finished, failed))),
            "cells": cells,
        }

    def plots(self, results=None, rows=None, version: str | None = None) -> dict[str, bytes]:
        from tunelab.report.plots import all_plots

        with PYPLOT:
            if results is None:
                results = load_results(self.root)
                rows, _ = build_leaderboard(results)
                version = version_of({c.meta["id"] for c in results.cells}, {f["id"] for f in results.failures})
            if self._plots[0] != version:
                self._plots = (version, all_plots(rows, results.metric))
            return self._plots[1]

    def cell_dir(self, cell_id: str) -> Path:
        """The directory of a cell named in the plan; anything else (`..`, a path, a typo) is refused."""
        planned = {meta["id"] for meta in read_json(self.root / SWEEP_FILE)["cells"]}
        if cell_id not in planned:
            raise LookupError(f"no cell {cell_id!r} in this sweep")
        return self.root / cell_id

    def cell_file(self, cell_id: str, name: str) -> Path:
        if name not in CELL_FILES:
            raise LookupError(f"{name!r} is not one of the files the board serves: {', '.join(CELL_FILES)}")
        path = self.cell_dir(cell_id) / name
        inside(self.root, path)
        if not path.is_file():
            raise LookupError(f"cell {cell_id} has no {name} (yet)")
        return path

    def log(self, cell_id: str) -> str:
        from tunelab.sweep.cell import log_path  # here: the sweep package imports torch, which the rest never needs

        path = log_path(self.cell_dir(cell_id).parent, cell_id)
        inside(self.root, path)
        if not path.is_file():
            return ""
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
            return handle.read().decode("utf-8", errors="replace")

    def curves(self, cell_id: str) -> dict[str, list[tuple[float, float]]]:
        directory = self.cell_dir(cell_id)
        return log_curves(directory / "logs.csv") if (directory / "logs.csv").is_file() else {}


def inside(root: Path, path: Path) -> None:
    """A symbolic link inside the sweep may point anywhere: the resolved path must stay under root."""
    if not path.resolve().is_relative_to(root):
        raise LookupError(f"{path.name} lies outside the sweep directory")


def has_artifact(directory: Path) -> bool:
    from tunelab.artifacts import NO_ARTIFACT_FILE

    return not (directory / NO_ARTIFACT_FILE).is_file()


def version_of(finished: set[str], failed: set[str]) -> str:
    """Changes exactly when a cell finishes or fails: the page redraws (and refetches plots) only then."""
    text = "\n".join(sorted(finished)) + "\n--\n" + "\n".join(sorted(failed))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def plot_curves(curves: dict[str, list[tuple[float, float]]], title: str) -> bytes:
    """Losses on the left, dev metrics on the right, both against the epoch."""
    from tunelab.report.plots import _png, _pyplot

    with PYPLOT:
        return _plot_curves(curves, title)


def _plot_curves(curves: dict[str, list[tuple[float, float]]], title: str) -> bytes:
    from tunelab.report.plots import _png, _pyplot

    plt = _pyplot()
    fig, (losses, metrics) = plt.subplots(1, 2, figsize=(8, 3))
    for name, points in curves.items():
        axis = losses if name.endswith("loss") else metrics
        axis.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=name)
    for axis, label in ((losses, "loss"), (metrics, "dev metric")):
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        if axis.lines:
            axis.legend(fontsize="small")
    fig.suptitle(title)
    return _png(fig)
