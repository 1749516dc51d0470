"""The leaderboard: one row per strategy × K (× prompt variant), mean ± std over seeds, with costs.

Hyper-parameter search: the cells of one row may hold several search combinations; the row uses
the combination with the best mean *dev* metric over seeds (never test), as LM-BFF does, and the
report lists every combination with its dev and test means.

Rows are ranked by the main metric's test mean within each K (comparing different K is not like
for like). Marks only where they mean something: the best mean of each metric column at its K, and
(report/recommend.py) the cheapest row statistically tied with the dev-best one. Cost columns are
not marked: the fewest parameters of a much worse row is no reason to pick it.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field

from tunelab.report.results import CellResult, SweepResults
from tunelab.stats import mean_std

# (column, higher is better) for the cost columns
COST_COLUMNS = {
    "trainable_params": False, "train_seconds": False, "eval_examples_per_second": True, "peak_memory_mb": False,
}
FRACTION_METRICS = {"accuracy", "f1", "mcc", "exact_match", "entity_f1", "entity_precision", "entity_recall", "squad_em", "squad_f1"}
PERTURBED = "perturbed_"
"""Prefix of a column read from a cell's metrics on the perturbed test copy (`perturbed_accuracy`)."""


def higher_is_better(metric: str) -> bool:
    from tunelab.metrics import get_metric

    try:
        return get_metric(metric.removeprefix(PERTURBED)).higher_is_better
    except Exception:  # noqa: BLE001 — flattened keys such as f1_<label>, or metrics of newer versions
        return True


def is_fraction(metric: str) -> bool:
    """Fractions (accuracy, F1, MCC, exact match) are shown ×100, as papers report them."""
    metric = metric.removeprefix(PERTURBED)
    return metric in FRACTION_METRICS or metric.startswith("f1_")


def cell_value(cell: CellResult, metric: str):
    """A cell's test metric, or (`perturbed_<metric>`) its metric on the perturbed test copy."""
    if metric.startswith(PERTURBED):
        return cell.perturbed.get(metric.removeprefix(PERTURBED))
    return cell.test.get(metric)


def header_of(metric: str) -> str:
    return metric.replace(PERTURBED, "perturbed ", 1) if metric.startswith(PERTURBED) else metric


def combo_key(search: dict) -> str:
    return json.dumps(search or {}, sort_keys=True, default=str)


@dataclass
class SearchChoice:
    group: str
    combos: list[dict]
    """One per combination: {search, dev_mean, dev_n, test_mean, test_n}."""
    chosen: dict
    held_out_dev: float | None = None
    """The row's dev score held out from the search's choice (report/search_held_out.py); None without dev outputs."""


@dataclass
class Row:
    group: str
    strategy: str
    method: str
    family: str
    k_shot: int | None
    variant: str | None
    search: dict
    seeds: list[int]
    values: dict[str, list[float]]
    """metric → per-seed test values (in seed order)."""
    dev: list[float]
    costs: dict[str, float]
    trainable_percent: float | None
    config: dict = field(default_factory=dict)
    """The resolved config of the row's first cell (model, train and strategy settings used)."""
    stats: dict[str, tuple[float, float]] = field(default_factory=dict)
    best: set[str] = field(default_factory=set)
    model: str = "—"
    cells: list[CellResult] = field(default_factory=list)
    """The row's cells (chosen search combination), in seed order: predictions, logs and links come from them."""
    interval: tuple[float, float] | None = None
    """95% bootstrap interval (over test examples) of the seed-averaged main metric; set by report/recommend.py."""
    verdict: str = ""
    """Against the dev-best row at its K (best on dev, cheapest tied, tied, worse); set by report/recommend.py."""

    def mean(self, metric: str) -> float | None:
        return self.stats[metric][0] if metric in self.stats else None


def group_cells(cells: list[CellResult]) -> dict[str, list[CellResult]]:
    groups: dict[str, list[CellResult]] = defaultdict(list)
    for cell in cells:
        groups[cell.meta["group"]].append(cell)
    return groups


def choose_combination(group: str, cells: list[CellResult], metric: str) -> tuple[list[CellResult], SearchChoice | None]:
    """The cells of the combination with the best mean dev metric (all cells without search)."""
    by_combo: dict[str, list[CellResult]] = defaultdict(list)
    for cell in cells:
        by_combo[combo_key(cell.meta.get("search"))].append(cell)
    if len(by_combo) == 1 and not cells[0].meta.get("search"):
        return cells, None
    sign = 1 if higher_is_better(metric) else -1
    combos = []
    for key, members in by_combo.items():
        dev = [c.dev[metric] for c in members if metric in c.dev]
        test = [c.test[metric] for c in members if metric in c.test]
        combos.append({
            "search": members[0].meta.get("search", {}), "key": key,
            "dev_mean": sum(dev) / len(dev) if dev else None, "dev_n": len(dev),
            "test_mean": sum(test) / len(test) if test else None, "test_n": len(test),
        })
    scored = [c for c in combos if c["dev_mean"] is not None]
    # No dev metric anywhere (no dev split): fall back to the first combination, never to test.
    chosen = max(scored, key=lambda c: sign * c["dev_mean"]) if scored else combos[0]
    return by_combo[chosen["key"]], SearchChoice(group, combos, chosen)


def hold_out_search(row: Row, choice: SearchChoice, cells: list[CellResult], metric: str, labels: list[str] | None) -> None:
    """The searched row's dev scores, per seed, held out from the search's own choice (when the cells kept their
    dev outputs): a maximum over combinations on the same dev examples would favour the searched row."""
    from tunelab.report.search_held_out import held_out_search_dev

    by_combo: dict[str, list[CellResult]] = defaultdict(list)
    for cell in cells:
        by_combo[combo_key(cell.meta.get("search"))].append(cell)
    held = held_out_search_dev(by_combo, metric, labels, higher_is_better(metric))
    if held and all(seed in held for seed in row.seeds):
        row.dev = [held[seed] for seed in row.seeds]
        choice.held_out_dev = sum(row.dev) / len(row.dev)


def metric_keys(results: SweepResults) -> list[str]:
    """Scalar test metrics in stored order, the main metric first, then (when any cell has one) the
    main metric on the perturbed test copy."""
    keys: list[str] = []
    for cell in results.cells:
        keys += [k for k, v in cell.test.items() if isinstance(v, (int, float)) and k not in keys]
    keys = sorted(keys, key=lambda k: k != results.metric)
    if any(isinstance(cell.perturbed.get(results.metric), (int, float)) for cell in results.cells):
        keys.insert(1, PERTURBED + results.metric)
    return keys


def build_leaderboard(results: SweepResults) -> tuple[list[Row], list[SearchChoice]]:
    metrics = metric_keys(results)
    rows, choices = [], []
    models = {c.meta["id"]: model_of(c.meta) for c in results.cells}
    for group, cells in group_cells(results.cells).items():
        chosen, choice = choose_combination(group, cells, results.metric)
        if choice:
            choices.append(choice)
        row = make_row(group, sorted(chosen, key=lambda c: c.meta["seed"]), metrics, results.metric)
        if choice:
            hold_out_search(row, choice, cells, results.metric, (results.config.get("task") or {}).get("label_names"))
        members = row.cells[0].costs.get("member_cells")
        if members:  # an ensemble serves its members' models, not the experiment's own model
            row.model = " + ".join(models.get(m, "?") for m in members)  # two copies of a model: two to serve
        rows.append(row)
    order = {cell["group"]: i for i, cell in enumerate(planned_groups(results))}
    sign = 1 if higher_is_better(results.metric) else -1
    # Ranked by the main metric within each K (the winner first); rows without it last, in sweep order.
    rows.sort(key=lambda r: (r.k_shot is None, r.k_shot or 0, r.mean(results.metric) is None,
                             -sign * (r.mean(results.metric) or 0.0), order.get(r.group, len(order))))
    mark_best(rows, metrics)
    return rows, choices


def planned_groups(results: SweepResults) -> list[dict]:
    seen, groups = set(), []
    for cell in [c.meta for c in results.cells] + results.failures + results.pending:
        if cell["group"] not in seen:
            seen.add(cell["group"])
            groups.append(cell)
    return groups


def model_of(meta: dict) -> str:
    return str(((meta.get("config") or {}).get("model") or {}).get("name") or "—")


def make_row(group: str, cells: list[CellResult], metrics: list[str], main: str) -> Row:
    first = cells[0].meta
    values = {m: [v for v in (cell_value(c, m) for c in cells) if v is not None] for m in metrics}
    row = Row(
        group=group, strategy=first["strategy"], method=first["method"], family=first.get("family", ""),
        k_shot=first["k_shot"], variant=first.get("variant"), search=first.get("search") or {},
        seeds=[c.meta["seed"] for c in cells], values=values,
        dev=[c.dev[main] for c in cells if main in c.dev],
        costs={col: mean_of([c.costs.get(col) for c in cells]) for col in COST_COLUMNS},
        trainable_percent=mean_of([c.costs.get("trainable_percent") for c in cells]),
        config=first.get("config", {}), cells=cells,
        model=model_of(first),
    )
    row.stats = {m: mean_std(v) for m, v in values.items() if v}
    return row


def mean_of(values: list) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    return sum(numbers) / len(numbers) if numbers else None


def mark_best(rows: list[Row], metrics: list[str]) -> None:
    """Add the column names where a row is best among the rows with its K (ties all marked)."""
    by_k: dict = defaultdict(list)
    for row in rows:
        by_k[row.k_shot].append(row)
    for same_k in by_k.values():
        if len(same_k) < 2:
            continue
        columns = {m: (lambda r, m=m: r.mean(m), higher_is_better(m)) for m in metrics}
        for name, (get, up) in columns.items():
            present = [(get(r), r) for r in same_k if get(r) is not None]
            if not present:
                continue
            best = (max if up else min)(v for v, _ in present)
            for value, row in present:
                if math.isclose(value, best, rel_tol=1e-9, abs_tol=1e-12):
                    row.best.add(name)


# ---------------------------------------------------------------------------------------------
# Formatting shared by the CSV, Markdown, HTML and terminal tables


def row_label(row: Row) -> str:
    return row.strategy + (f" [{row.variant}]" if row.variant else "")


def fmt_metric(metric: str, stats: tuple[float, float] | None, n: int) -> str:
    if stats is None:
        return "–"
    scale = 100.0 if is_fraction(metric) else 1.0
    mean, std = stats
    return f"{mean * scale:.1f} ± {std * scale:.1f}" if n > 1 else f"{mean * scale:.1f}"


def fmt_params(count: float | None, percent: float | None) -> str:
    if count is None:
        return "–"
    text = f"{count / 1e6:.2f}M" if count >= 1e5 else f"{int(count):,}"
    return f"{text} ({percent:.3g}%)" if percent is not None else text


def fmt_number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:,.1f}{unit}" if value < 1000 else f"{value:,.0f}{unit}"


def fmt_interval(metric: str, interval: tuple[float, float] | None) -> str:
    if interval is None:
        return "–"
    scale = 100.0 if is_fraction(metric) else 1.0
    return f"[{interval[0] * scale:.1f}, {interval[1] * scale:.1f}]"


def table(rows: list[Row], metrics: list[str], compact: bool = False) -> tuple[list[str], list[list[str]], list[set[int]]]:
    """(headers, cells as text, per row the indices of its marked cells) — one source for every format.
    compact (the terminal, 80 columns): no family, interval, seeds or verdict column, no K column when all rows share one K (the recommendation printed
    below it carries them), no percentage, short headers."""
    unit = "\n(%)" if compact else " (%)"  # compact: two-line headers keep the terminal table within 80 columns
    show_k = not compact or len({row.k_shot for row in rows}) > 1  # one K: the recommendation names it
    headers = ["strategy", "model"] + ([] if compact else ["family"]) + ["K"] * show_k
    headers += [header_of(m).replace(" ", "\n" if compact else " ") + (unit if is_fraction(m) else "") for m in metrics[:1]]
    headers += [f"95% interval of {header_of(metrics[0])}"] if metrics and not compact else []
    headers += [header_of(m).replace(" ", "\n" if compact else " ") + (unit if is_fraction(m) else "") for m in metrics[1:]]
    headers += (["params", "train\ns", "eval\nex/s", "peak\nMB"] if compact else
                ["seeds", "trainable params", "train time (s)", "eval ex/s", "peak memory (MB)", "vs best on dev"])
    keys = ["strategy", "model"] + ([] if compact else ["family"]) + ["K"] * show_k + metrics[:1] + ["interval"] * bool(metrics and not compact)
    keys += metrics[1:] + ([] if compact else ["seeds"])
    keys += ["trainable_params", "train_seconds", "eval_examples_per_second", "peak_memory_mb"]
    keys += [] if compact else ["verdict"]
    body, best = [], []
    for row in rows:
        cells = [row_label(row), row.model] + ([] if compact else [row.family])
        cells += ["all" if row.k_shot is None else str(row.k_shot)] * show_k
        values = [fmt_metric(m, row.stats.get(m), len(row.values.get(m, []))) for m in metrics]
        cells += values[:1] + [fmt_interval(metrics[0], row.interval)] * bool(metrics and not compact) + values[1:]
        cells += [] if compact else [str(len(row.seeds))]
        cells += [fmt_params(row.costs["trainable_params"], None if compact else row.trainable_percent),
                  fmt_number(row.costs["train_seconds"]), fmt_number(row.costs["eval_examples_per_second"]),
                  fmt_number(row.costs["peak_memory_mb"])]
        cells += [] if compact else [row.verdict or "–"]
        body.append(cells)
        best.append({i for i, key in enumerate(keys) if key in row.best})
    return headers, body, best


def csv_rows(rows: list[Row], metrics: list[str]) -> list[dict]:
    """Raw numbers (fractions stay fractions) for spreadsheets and scripts."""
    out = []
    for row in rows:
        record = {
            "strategy": row.strategy, "method": row.method, "family": row.family, "k_shot": row.k_shot,
            "prompt_variant": row.variant or "", "search": json.dumps(row.search) if row.search else "",
            "model": row.model, "seeds": " ".join(map(str, row.seeds)),
        }
        for m in metrics:
            mean, std = row.stats.get(m, (None, None))
            record[f"{m}_mean"], record[f"{m}_std"] = mean, std
        record["interval_low"], record["interval_high"] = row.interval or (None, None)
        record["dev_mean"] = sum(row.dev) / len(row.dev) if row.dev else None
        record.update({col: row.costs[col] for col in COST_COLUMNS})
        record["trainable_percent"] = row.trainable_percent
        record["best"] = ";".join(sorted(row.best))
        record["verdict"] = row.verdict
        out.append(record)
    return out
