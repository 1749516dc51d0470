"""The report's per-task table for multi-task cells (their metrics.json holds `tasks: {name: {test, ...}}`).

A multi-task row of the leaderboard shows the mean over tasks; this table shows what makes it up:
one line per leaderboard group and task, each task's test metrics as mean ± std over seeds, so a
joint model (`joint: true`) and each task alone (`joint: false`) compare task by task.
"""

from __future__ import annotations

import json
from collections import defaultdict

from tunelab.report.document import Section, Table, Text
from tunelab.report.leaderboard import fmt_metric, header_of
from tunelab.stats import mean_std


def task_results(cell) -> dict:
    """{task: test metrics} of a multi-task cell; {} for any other cell (or an unreadable file)."""
    try:
        metrics = json.loads((cell.directory / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return {name: result.get("test", {}) for name, result in (metrics.get("tasks") or {}).items()}


def multitask_section(results) -> Section | None:
    """None when no finished cell is a multi-task one."""
    values: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    joint: dict[str, bool] = {}
    for cell in results.cells:
        tasks = task_results(cell)
        for task, metrics in tasks.items():
            for metric, value in metrics.items():
                if isinstance(value, (int, float)):
                    values[(cell.meta["group"], task)][metric].append(float(value))
        if tasks:
            joint[cell.meta["group"]] = (cell.meta.get("config") or {}).get("multitask", {}).get("joint", True)
    if not values:
        return None
    metrics = [m for m in results.metrics if any(m in v for v in values.values())]
    headers = ["row", "model", "task"] + [header_of(m) for m in metrics] + ["seeds"]
    rows = []
    for (group, task), by_metric in values.items():
        seeds = max(len(v) for v in by_metric.values())
        cells = [fmt_metric(m, mean_std(by_metric[m]) if by_metric.get(m) else None, len(by_metric.get(m, [])))
                 for m in metrics]
        rows.append([group, "one per task" if joint[group] is False else "joint", task] + cells + [str(seeds)])
    return Section("Per-task results", [
        Text("Multi-task rows: each task's own test metrics (mean ± std over seeds, ×100 for fractions); the "
             "leaderboard shows their mean. `joint`: one shared model with a head per task; `one per task`: "
             "each task trained alone (multitask.joint: false)."),
        Table(headers, rows),
    ])
