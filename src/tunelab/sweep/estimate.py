"""How long the unfinished cells of a sweep will take, from the cells that already finished.

A finished cell's `costs.json` holds its training and evaluation seconds; a cell to run is given the
mean of the finished cells of its own strategy entry (a PET cell costs many head cells), or the mean
of all finished cells when none of its entry has finished. Model loading is not in `costs.json`, so
the estimate leans low by a few seconds per cell.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean

from tunelab.run import COSTS_FILE
from tunelab.sweep.cell import cell_dir
from tunelab.sweep.expand import Cell

SECONDS_KEYS = ("train_seconds", "eval_seconds", "perturbed_eval_seconds")


def cell_seconds(root: Path, cell_id: str) -> float | None:
    try:
        costs = json.loads((cell_dir(root, cell_id) / COSTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    seconds = [costs.get(key) for key in SECONDS_KEYS]
    return sum(s for s in seconds if isinstance(s, (int, float))) if any(seconds) else None


def estimate_line(root: Path, finished: list[Cell], to_run: list[Cell]) -> str:
    """One line: the cell counts and the estimated time of the cells still to run (or why there is none)."""
    counts = f"{len(finished) + len(to_run)} cells: {len(finished)} finished, {len(to_run)} to run"
    if not to_run:
        return counts + "; nothing left to run"
    durations: dict[str, list[float]] = {}
    for cell in finished:
        seconds = cell_seconds(root, cell.id)
        if seconds is not None:
            durations.setdefault(cell.strategy, []).append(seconds)
    if not durations:
        return counts + "; no estimate yet (no finished cell has recorded its time)"
    overall = mean(s for values in durations.values() for s in values)
    total = sum(mean(durations[c.strategy]) if c.strategy in durations else overall for c in to_run)
    known = sum(len(values) for values in durations.values())
    return (f"{counts}; estimated time for them: about {duration(total)} (mean training + evaluation time of "
            f"{known} finished cell(s), per strategy where one has finished; model loading not included)")


def duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"
