"""How long the unfinished cells of a sweep will take, from the cells that already finished.

A finished cell's `costs.json` holds its training and evaluation seconds; a cell to run is given the
mean of the finished cells of its own strategy entry. Entries with no finished cell get no estimate and
are named instead: entries differ by orders of magnitude (a SmolLM2 PET cell costs a hundred MiniLM
head cells), so borrowing another entry's mean once said "5 h" for 11 minutes of work. Model loading
is not in `costs.json`, so the estimate leans low by a few seconds per cell.

With `sweep.workers` above one the cells are laid out as the local executor starts them (plan order,
a reader once the cells it reads have ended), so the estimate is when the last one ends, not the summed
time divided by the workers: one long cell left at the end runs alone.
"""

from __future__ import annotations

import heapq
import json
from pathlib import Path
from statistics import mean

from tunelab.run import COSTS_FILE
from tunelab.sweep.cell import cell_dir
from tunelab.sweep.expand import Cell, PlanOrder

SECONDS_KEYS = ("train_seconds", "eval_seconds", "perturbed_eval_seconds")


def cell_seconds(root: Path, cell_id: str) -> float | None:
    try:
        costs = json.loads((cell_dir(root, cell_id) / COSTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    seconds = [costs.get(key) for key in SECONDS_KEYS]
    return sum(s for s in seconds if isinstance(s, (int, float))) if any(seconds) else None


def estimate_line(root: Path, finished: list[Cell], to_run: list[Cell], at_once: int = 1) -> str:
    """One line: the cell counts and the estimated time of the cells still to run (or why there is none).
    `at_once`: cells run side by side (`sweep.workers`): the summed cell times are shared out between them."""
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
    estimated = [c for c in to_run if c.strategy in durations]
    unknown: dict[str, int] = {}
    for cell in to_run:
        if cell.strategy not in durations:
            unknown[cell.strategy] = unknown.get(cell.strategy, 0) + 1
    line = counts
    if estimated:
        seconds = {c.id: mean(durations[c.strategy]) for c in estimated}
        total = schedule_seconds(to_run, seconds, at_once)
        of = "them" if len(estimated) == len(to_run) else f"{len(estimated)} of them"
        shared = f", laid out {at_once} cells at once as the sweep starts them" if at_once > 1 else ""
        line += (f"; estimated time for {of}: about {duration(total)} (mean training + evaluation time of the "
                 f"finished cells of the same strategy entry{shared}; model loading not included)")
    if unknown:
        named = ", ".join(f"{name} ({n} cell{'s' * (n > 1)})" for name, n in unknown.items())
        line += f"; no estimate for {named}: none of that entry's cells has finished yet"
    return line


def schedule_seconds(cells: list[Cell], seconds: dict[str, float], workers: int) -> float:
    """When the last of `cells` ends if up to `workers` run at once in the local executor's order: the first
    cell in plan order whose readings have ended starts whenever a place is free. A cell missing from
    `seconds` (no estimate) counts as taking none."""
    order, now = PlanOrder(cells), 0.0
    running: list[tuple[float, str]] = []  # (end time, cell id), earliest first
    while order or running:
        while len(running) < workers and (cell := order.take()) is not None:
            heapq.heappush(running, (now + seconds.get(cell.id, 0.0), cell.id))
        if not running:
            break  # unreachable: a cell reads only cells planned before it
        now, cell_id = heapq.heappop(running)
        order.end(cell_id)
    return now


def duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"
