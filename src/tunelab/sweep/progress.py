"""One live display for a sweep: cells done, the running cell(s), elapsed time and ETA.

One cell at a time (the local executor's default): the ETA is the mean duration of the cells run so far in
this session times the cells left, minus the time already spent on the current one (cells finished
in an earlier session don't count: they were skipped in no time). Several at once (Ray, or `sweep.workers`): the time
per finished cell so far (elapsed / done) times the cells left. Finished cells are printed above
the live lines, one line each.
"""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "estimating…"
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class SweepDisplay:
    def __init__(self, total: int, finished_before: int, console: Console | None = None, note: str = ""):
        self.total, self.finished_before, self.note = total, finished_before, note
        self.done = self.failed = 0
        self.durations: list[float] = []
        self.running: dict[str, float] = {}
        """Cells started and not finished, with when they started."""
        self.parallel = False
        self.started = time.perf_counter()
        self.console = console or Console()
        self.live = Live(self, console=self.console, refresh_per_second=2, redirect_stdout=False, redirect_stderr=False)

    @property
    def todo(self) -> int:
        return self.total - self.finished_before

    def eta(self) -> float | None:
        if not self.durations:
            return None
        left = self.todo - self.done
        now = time.perf_counter()
        if self.parallel:
            return (now - self.started) / self.done * left
        running = sum(now - started for started in self.running.values())
        return sum(self.durations) / len(self.durations) * left - running

    def __rich__(self) -> Group:
        bar = Table.grid(padding=(0, 1))
        count = self.finished_before + self.done
        bar.add_row(
            Text(f"cells {count}/{self.total}", style="bold"),
            ProgressBar(total=max(self.total, 1), completed=count, width=30),
            Text(f"elapsed {clock(time.perf_counter() - self.started)}  ETA {clock(self.eta()) if self.done < self.todo else '0:00'}"),
            Text(f"{self.failed} failed", style="red") if self.failed else Text(""),
        )
        now = time.perf_counter()
        shown = [f"{cell_id} ({clock(now - started)})" for cell_id, started in list(self.running.items())[:4]]
        more = f" and {len(self.running) - 4} more" if len(self.running) > 4 else ""
        return Group(bar, Text(f"running {', '.join(shown)}{more}" if shown else "", style="cyan"))

    def __enter__(self) -> "SweepDisplay":
        if self.finished_before:
            self.console.print(f"{self.finished_before} of {self.total} cells finished earlier: skipped")
        if self.note:
            self.console.print(self.note, markup=False)
        self.live.start()
        return self

    def __exit__(self, *exc) -> None:
        self.running.clear()
        self.live.stop()

    def start(self, cell_id: str) -> None:
        self.running[cell_id] = time.perf_counter()
        self.parallel = self.parallel or len(self.running) > 1
        self.live.refresh()

    def finish(self, cell_id: str, ok: bool, summary: str) -> None:
        self.durations.append(time.perf_counter() - self.running.pop(cell_id, self.started))
        self.done += 1
        self.failed += 0 if ok else 1
        mark = "[green]✓[/green]" if ok else "[red]✗[/red]"
        self.console.print(f"{mark} {escape(cell_id)}  {escape(summary)}  [dim]({clock(self.durations[-1])})[/dim]", highlight=False)
        self.live.refresh()
