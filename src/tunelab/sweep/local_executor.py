"""`sweep.executor: local`: the cells of a sweep on this machine, one at a time or `sweep.workers` at once.

Each cell runs in its own process forked from a server that imported torch and transformers once
(`isolation: process`), or in this process (`isolation: none`, one at a time: used by tests).

Why several at once on one machine: a cell's torch threads do not keep every core busy. Small
matrices (MiniLM, batches of 8 sentences) scale poorly past one thread, so two cells with one
thread each finish more work per minute than one cell with two (bench/local_workers.py). The cores
are shared out: each cell gets `cores // workers` torch threads. A cell that reads other cells (an
`ensemble` its members, a `distill` student its teacher) starts only once they have ended, as on Ray.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import time
from pathlib import Path

from tunelab.sweep.cell import clear_failure, failed_path, is_finished, record_failure, run_cell_here
from tunelab.sweep.expand import Cell, PlanOrder


def run_locally(cells: list[Cell], root: Path, source: str, display, isolation: str, workers: int = 1):
    """Yield (cell, ok) as each cell ends."""
    if isolation == "none":
        for cell in cells:
            display.start(cell.id)
            yield cell, run_cell_here(cell.meta(), root, source)
        return
    yield from run_children(cells, root, source, display, workers)


def machine_cores() -> int:
    """The cores this process may run on (its affinity where the platform tells it, else every core)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cell_threads(workers: int) -> int | None:
    """Torch threads per cell: this process's cores shared out (None: one cell at a time keeps torch's default)."""
    if workers == 1:
        return None
    return max(1, machine_cores() // workers)


def workers_line(workers: int) -> str:
    """What `sweep.workers` does on this machine, said once when a sweep starts ("" for one at a time)."""
    if workers == 1:
        return ""
    cores = machine_cores()
    line = f"{workers} cells at once, {cell_threads(workers)} torch thread(s) each ({cores} cores; sweep.workers)"
    return line + (": more cells than cores, so they share cores" if workers > cores else "")


def run_children(cells: list[Cell], root: Path, source: str, display, workers: int):
    """Up to `workers` cell processes at once, started in plan order; Ctrl-C (or an error) stops them all."""
    threads = cell_threads(workers)
    order = PlanOrder(cells)
    running: dict[int, ChildCell] = {}  # process sentinel → its cell
    try:
        while order or running:
            while len(running) < workers and (cell := order.take()) is not None:
                child = ChildCell(cell, root, source, threads)
                running[child.sentinel] = child
                display.start(cell.id)
            for sentinel in multiprocessing.connection.wait(list(running)):
                child = running.pop(sentinel)
                order.end(child.cell.id)  # ended either way: a failed member fails its reader clearly
                yield child.cell, child.finish()
    finally:
        for child in running.values():
            child.stop()


class ChildCell:
    """One cell in a fresh process forked from a server that has the libraries imported."""

    def __init__(self, cell: Cell, root: Path, source: str, threads: int | None):
        from tunelab.sweep.cell import child_main

        self.cell, self.root, self.started = cell, root, time.time()
        context = child_context()
        lifeline, self.keep_alive = context.Pipe(duplex=False)  # the child exits when keep_alive closes (our death)
        self.process = context.Process(target=child_main, args=(cell.meta(), str(root), source, lifeline, threads),
                                       name=f"tunelab-{cell.id}")
        self.process.start()
        lifeline.close()
        self.sentinel = self.process.sentinel

    def finish(self) -> bool:
        """The ended process's outcome: True when its cell finished; a failure is recorded if the cell did not."""
        self.process.join()
        self.keep_alive.close()
        cell, root = self.cell, self.root
        if self.process.exitcode == 0 and is_finished(root, cell.id):
            clear_failure(root, cell.id)
            return True
        failure = failed_path(root, cell.id)
        if not failure.is_file() or failure.stat().st_mtime < self.started:
            code = self.process.exitcode
            why = f"was killed by signal {-code} (out of memory?)" if code and code < 0 else f"exited with code {code}"
            record_failure(root, cell.meta(), "ProcessError", f"the cell's process {why} without recording an error; see its log")
        return False

    def stop(self) -> None:
        """SIGTERM (the cell removes its half-written directory), then SIGKILL if it lingers."""
        self.process.terminate()
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.keep_alive.close()


_CONTEXT = None


def child_context():
    """forkserver: each cell forks from a clean server process that imported torch/transformers once
    (fast start, no fork-after-threads hazards, and each cell's peak memory is its own)."""
    global _CONTEXT
    if _CONTEXT is None:
        methods = multiprocessing.get_all_start_methods()
        _CONTEXT = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if "forkserver" in methods:
            _CONTEXT.set_forkserver_preload(["tunelab.sweep.warm"])
    return _CONTEXT
