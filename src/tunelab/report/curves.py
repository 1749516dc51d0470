"""The drill-down: per leaderboard row, links to its cells' files and its learning curves.

Links are relative to the sweep directory (the report sits in it), so the folder can be moved or
zipped whole. Learning curves come from each cell's `logs.csv` (the Trainer's CSV log): the dev
metric and the dev loss per evaluated epoch, and the training loss where it was logged, one line
per seed. Strategies that do not train (prompting) write no `logs.csv` and get no curves.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from tunelab.report.document import Anchor, Image, Link, Table, Text
from tunelab.report.leaderboard import Row, cell_value, is_fraction, row_label
from tunelab.report.plots import _png, _pyplot

LOG_FILE = "logs.csv"
FILES = (("config", "{id}/config.yaml"), ("log", "logs/{id}.log"), ("metrics", "{id}/metrics.json"),
         ("predictions", "{id}/predictions.jsonl"))


def slug(group: str) -> str:
    """A row's anchor and file-name part: letters, digits, '.', '_' and '-' only."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", group)


def anchor(row: Row) -> str:
    return f"row-{slug(row.group)}"


NOT_CURVES = {"step", "epoch", "learning_rate", "grad_norm", "total_flos", "train_runtime", "train_loss",
              "train_samples_per_second", "train_steps_per_second", "eval_runtime",
              "eval_samples_per_second", "eval_steps_per_second"}
"""Columns of `logs.csv` that are no learning curve: counters, the learning rate, speeds, and
`train_loss` (one mean over the whole run)."""


def log_curves(path: Path) -> dict[str, list[tuple[float, float]]]:
    """`logs.csv` (one row per Trainer log: training loss, or eval_* metrics) → name → [(epoch, value)].
    Raises OSError/UnicodeDecodeError/csv.Error on an unreadable file (the caller decides what that means)."""
    curves: dict[str, list[tuple[float, float]]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            epoch = number(record.get("epoch"))
            if epoch is None:
                continue
            for key, value in record.items():
                if key and key not in NOT_CURVES and number(value) is not None:  # text columns are no curve
                    curves.setdefault(key, []).append((epoch, number(value)))
    return curves


def read_log(path: Path) -> dict[str, list[tuple[float, float]]]:
    """`log_curves`, or {} when the file is unreadable: the report still builds."""
    try:
        return log_curves(path)
    except (OSError, ValueError, csv.Error):  # ValueError covers a file that is not UTF-8
        return {}


def number(text) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def plot_curves(row: Row, metric: str) -> bytes | None:
    """Dev metric (left) and losses (right) against epoch, one colour per seed; None without logs."""
    logs = [(cell.meta["seed"], read_log(cell.directory / LOG_FILE)) for cell in row.cells]
    logs = [(seed, log) for seed, log in logs if log]
    if not logs:
        return None
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.0, 3.0))
    scale = 100.0 if is_fraction(metric) else 1.0
    for (seed, log), color in zip(logs, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 10):
        if log.get(f"eval_{metric}"):
            xs, ys = zip(*log[f"eval_{metric}"])
            left.plot(xs, [y * scale for y in ys], marker="o", color=color, label=f"seed {seed}")
        for key, style, name in (("eval_loss", "--", "dev"), ("loss", "-", "train")):
            if log.get(key):
                xs, ys = zip(*log[key])
                right.plot(xs, ys, style, color=color, label=f"{name} loss, seed {seed}")
    left.set_title(f"dev {metric}" + (" (%)" if scale != 1.0 else ""), fontsize=9)
    right.set_title("loss (dashed: dev, solid: train)", fontsize=9)
    for ax in (left, right):
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    if left.lines:
        left.legend(fontsize=7)
    fig.suptitle(f"{row_label(row)} (K={'all' if row.k_shot is None else row.k_shot})", fontsize=10)
    return _png(fig)


def cell_links(root: Path, row: Row, metric: str) -> Table:
    body = []
    for cell in row.cells:
        cid = cell.meta["id"]
        links = [Link(name, path.format(id=cid)) if (root / path.format(id=cid)).is_file() else "–" for name, path in FILES]
        value = cell_value(cell, metric)
        shown = "–" if value is None else (f"{value * 100:.1f}" if is_fraction(metric) else f"{value:.3g}")
        body.append([cid, str(cell.meta.get("seed", "–")), *links, shown])
    return Table(["cell", "seed", "config", "log", "metrics", "predictions", f"test {metric}"], body)


def drill_down(root: Path, rows: list[Row], metric: str) -> tuple[list, dict[str, bytes]]:
    """(the section's blocks, curve file name → PNG bytes)."""
    blocks, curves = [Text("Each row's cells: their resolved configuration, log, metrics and test predictions (links "
                           "relative to the sweep directory), and learning curves from their logs.csv.")], {}
    for row in rows:
        blocks += [Anchor(anchor(row)),
                   Text(f"{row_label(row)} (K={'all' if row.k_shot is None else row.k_shot}, {row.model}, "
                        f"{row.family or '–'})"),
                   cell_links(root, row, metric)]
        png = plot_curves(row, metric)
        if png is None:
            blocks.append(Text("No learning curves: its cells logged no training (no logs.csv)."))
        else:
            name = f"curves_{slug(row.group)}.png"
            curves[name] = png
            blocks.append(Image(name, png, f"learning curves of {row_label(row)}"))
    return blocks, curves
