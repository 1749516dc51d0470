"""The report's continual-learning section: per leaderboard row (sweep entry), the accuracy matrix
averaged over seeds as a heatmap, and average accuracy, BWT and FWT as mean ± std over seeds.
Read from each cell's metrics.json (`continual`), so a report never loads a model."""

from __future__ import annotations

from collections import defaultdict

from tunelab.report.document import Image, Section, Table, Text
from tunelab.report.plots import plot_accuracy_matrix
from tunelab.report.results import METRICS_FILE, SweepResults, read_json
from tunelab.stats import mean_std

FIGURES = ("average_accuracy", "bwt", "fwt")


def continual_groups(results: SweepResults) -> dict[str, list[dict]]:
    """Leaderboard group → the `continual` summaries of its finished cells (groups without one left out)."""
    groups = defaultdict(list)
    for cell in results.cells:
        summary = read_json(cell.directory / METRICS_FILE).get("continual")
        if summary:
            groups[cell.meta.get("group", cell.meta.get("id"))].append(summary)
    return dict(groups)


def mean_matrix(summaries: list[dict]) -> list[list[float]]:
    matrices = [s["matrix"] for s in summaries]
    return [[sum(m[j][i] for m in matrices) / len(matrices) for i in range(len(matrices[0][0]))]
            for j in range(len(matrices[0]))]


def continual_plots(groups: dict[str, list[dict]]) -> dict[str, bytes]:
    """file name → heatmap PNG of the group's seed-mean matrix."""
    plots = {}
    for group, summaries in groups.items():
        first = summaries[0]
        metric = first["metric"][0]
        title = f"{group}: {metric} after each task (mean of {len(summaries)} seed{'s' * (len(summaries) > 1)})"
        plots[f"continual_{group}.png"] = plot_accuracy_matrix(first["tasks"], mean_matrix(summaries), metric, title)
    return plots


def fmt(values: list, signed: bool) -> str:
    values = [v * 100 for v in values if v is not None]
    if not values:
        return "–"
    mean, std = mean_std(values)
    text = f"{mean:+.1f}" if signed else f"{mean:.1f}"
    return f"{text} ± {std:.1f}" if len(values) > 1 else text


def continual_section(groups: dict[str, list[dict]], plots: dict[str, bytes]) -> Section | None:
    if not groups:
        return None
    rows = [[group, summaries[0]["method"], str(len(summaries))] + [fmt([s[k] for s in summaries], k != "average_accuracy")
                                                                    for k in FIGURES]
            for group, summaries in groups.items()]
    text = ("Each model was trained on the tasks in order (" + " → ".join(next(iter(groups.values()))[0]["tasks"])
            + "), with every task's test split scored before training and after each task. Average: the final model's "
            "mean over tasks; BWT (backward transfer) = mean over tasks but the last of (final score − score just "
            "after training on it): negative means forgetting; FWT (forward transfer) = mean over tasks but the first "
            "of (score just before training on it − untrained score). Points (×100), mean ± std over seeds.")
    images = [Image(name, png, name.removesuffix(".png").replace("_", " ")) for name, png in plots.items()]
    return Section("Continual learning", [Text(text), Table(["row", "method", "seeds", "average", "BWT", "FWT"], rows)]
                   + images)
