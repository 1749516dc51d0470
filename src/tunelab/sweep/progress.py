"""One live display for a sweep: cells done, the current cell, elapsed time and ETA.

The ETA is the mean duration of the cells run so far in this session times the cells left, minus
the time already spent on the current one (cells finished in an earlier session don't count: they
were skipped in no time). Finished cells are printed above the live lines, one line each.
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
    def __init__(self, total: int, finished_before: int, console: Console | None = None):
        self.total, self.finished_before = total, finished_before
        self.done = self.failed = 0
        self.durations: list[float] = []
        self.current: str | None = None
        self.started = self.cell_started = time.perf_counter()
        self.console = console or Console()
        self.live = Live(self, console=self.console, refresh_per_second=2, redirect_stdout=False, redirect_stderr=False)

    @property
    def todo(self) -> int:
        return self.total - self.finished_before

    def eta(self) -> float | None:
        if not self.durations:
            return None
        left = self.todo - self.done
        running = time.perf_counter() - self.cell_started if self.current else 0.0
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
        if self.current:
            now = Text(f"running {self.current} ({clock(time.perf_counter() - self.cell_started)})", style="cyan")
        else:
            now = Text("")
        return Group(bar, now)

    def __enter__(self) -> "SweepDisplay":
        if self.finished_before:
            self.console.print(f"{self.finished_before} of {self.total} cells finished earlier: skipped")
        self.live.start()
        return self

    def __exit__(self, *exc) -> None:
        self.current = None
        self.live.stop()

    def start(self, cell_id: str) -> None:
        self.current, self.cell_started = cell_id, time.perf_counter()
        self.live.refresh()

    def finish(self, cell_id: str, ok: bool, summary: str) -> None:
        self.durations.append(time.perf_counter() - self.cell_started)
        self.done += 1
        self.failed += 0 if ok else 1
        mark = "[green]✓[/green]" if ok else "[red]✗[/red]"
        self.console.print(f"{mark} {escape(cell_id)}  {escape(summary)}  [dim]({clock(self.durations[-1])})[/dim]", highlight=False)
        self.current = None
        self.live.refresh()
