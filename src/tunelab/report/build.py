"""Build the report of a sweep directory from its stored results alone (no model is loaded).

Writes, beside the cells: `report.html` (self-contained), `report.md` (+ `plots/*.png`),
`leaderboard.csv` and `leaderboard.md`.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from tunelab.report.abtest import ABResult, prompt_ab_tests
from tunelab.report.curves import anchor, drill_down
from tunelab.report.document import Code, Image, Link, Section, Table, Text, markdown_table, to_html, to_markdown
from tunelab.report.leaderboard import (PERTURBED, Row, SearchChoice, build_leaderboard, csv_rows, is_fraction,
                                        metric_keys, table)
from tunelab.report.distillation import distillation_section
from tunelab.report.errors import analyse, error_blocks, flag_one_class
from tunelab.report.continual import continual_groups, continual_plots, continual_section
from tunelab.report.multitask import multitask_section
from tunelab.report.plots import PLOT_FILES, all_plots
from tunelab.report.prompt_search import prompt_search_section
from tunelab.report.recommend import (Recommendation, flag_unfinished, recommend, recommendation_blocks,
                                      recommendation_lines, row_examples)
from tunelab.report.results import SweepResults, load_results


@dataclass
class Report:
    results: SweepResults
    rows: list[Row]
    metrics: list[str]
    html: Path
    markdown: Path
    csv: Path
    recommendations: list[Recommendation] = field(default_factory=list)


def build_report(root: Path) -> Report:
    results = load_results(root)
    rows, choices = build_leaderboard(results)
    metrics = metric_keys(results)
    examples = {row.group: row_examples(row) for row in rows}  # stored test predictions, read once
    recommendations = recommend(rows, results.metric, examples)
    label_names = (results.config.get("task") or {}).get("label_names")
    analyses = [a for a in (analyse(row, examples[row.group], label_names) for row in rows if examples[row.group]) if a]
    flag_one_class(analyses, recommendations)  # before the tables are written: it adds to verdicts
    flag_unfinished(recommendations, rows, results.pending + results.failures)
    tests = prompt_ab_tests(results.cells, results.metric)
    plots = all_plots(rows, results.metric)
    sections = report_sections(results, rows, metrics, choices, tests, plots)
    sections.insert(0, Section("Recommendation", recommendation_blocks(recommendations)))
    drill, curves = drill_down(Path(root), rows, results.metric)
    if rows:
        at = next(i for i, s in enumerate(sections) if s.title == "Plots") + 1
        sections[at:at] = [Section("Error analysis", error_blocks(analyses)), Section("Drill-down", drill)]
    distilled = distillation_section(rows, results.metric)  # distill rows beside their teachers' rows
    if distilled is not None:
        sections.insert(3, distilled)  # after the leaderboard
    per_task = multitask_section(results)  # multi-task cells: each task's metrics behind the mean
    if per_task is not None:
        sections.insert(3, per_task)  # after the leaderboard
    continual = continual_groups(results)  # continual-learning cells: their accuracy matrices
    matrices = continual_plots(continual)
    if continual:
        sections.insert(3, continual_section(continual, matrices))  # after the leaderboard
    title = f"tunelab report: {results.name}"
    root = Path(root)
    (root / "plots").mkdir(exist_ok=True)
    for name, png in plots.items():
        write_atomic(root / "plots" / name, png)
    for name in set(PLOT_FILES) - set(plots):
        (root / "plots" / name).unlink(missing_ok=True)  # an earlier report's plot no longer describes the data
    for old in (root / "plots").glob("continual_*.png"):
        if old.name not in matrices:
            old.unlink()
    for name, png in matrices.items():
        write_atomic(root / "plots" / name, png)
    for old in (root / "plots").glob("curves_*.png"):
        if old.name not in curves:
            old.unlink()
    for name, png in curves.items():
        write_atomic(root / "plots" / name, png)
    write_atomic(root / "report.md", to_markdown(title, sections).encode("utf-8"))
    write_atomic(root / "report.html", to_html(title, sections).encode("utf-8"))
    headers, body, best = table(rows, metrics)
    write_atomic(root / "leaderboard.md", (markdown_table(Table(headers, body, best)) + "\n").encode("utf-8"))
    write_csv(root / "leaderboard.csv", csv_rows(rows, metrics))
    return Report(results, rows, metrics, root / "report.html", root / "report.md", root / "leaderboard.csv",
                  recommendations)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_csv(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        if records:
            writer = csv.DictWriter(handle, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------


def report_sections(results, rows, metrics, choices, tests, plots) -> list[Section]:
    return [
        overview(results),
        Section("Leaderboard", [
            Text("Test-split metrics as mean ± standard deviation over seeds, rows ranked by the main metric within "
                 "each K. The 95% interval is a bootstrap over test examples of the seed-averaged main metric (how "
                 "far another test set of this size could move it). Bold: the best of its metric column among rows "
                 "with the same K, and in the last column the best on dev and the cheapest row statistically tied "
                 "with it (see Recommendation). Fractions are shown ×100. Rows with a hyper-parameter "
                 "search use the combination chosen on the dev split. Training time and evaluation speed are per cell."
                 + perturbed_note(metrics) + once_note(results, rows)),
            linked_table(rows, metrics) if rows else Text("No cell has finished yet."),
        ]),
        Section("Plots", [Image(name, png, name.removesuffix(".png").replace("_", " ")) for name, png in plots.items()]
                + ([Text("Metric against K is drawn when the sweep has two or more K values (sweep.k_shot).")]
                   if plots and "metric_vs_k.png" not in plots else [])
                or [Text("No plots: no cell has finished yet.")]),
        ab_section(tests),
        search_section(choices, results.metric),
        *filter(None, [prompt_search_section(results.cells)]),
        chosen_section(rows),
        failure_section(results),
        Section("Resolved configuration", [
            Text(f"The experiment as run (defaults filled in; data paths resolved). Each cell's own configuration "
                 f"is in <cell>/config.yaml under {results.root}."),
            Code(yaml.safe_dump(results.config, sort_keys=False, allow_unicode=True), "yaml"),
        ]),
    ]


def linked_table(rows: list[Row], metrics: list[str]) -> Table:
    """The leaderboard with each strategy linked to its drill-down (cells' files, learning curves)."""
    headers, body, best = table(rows, metrics)
    return Table(headers, [[Link(cells[0], "#" + anchor(row))] + cells[1:] for row, cells in zip(rows, body)], best)


def test_source(data: dict) -> str:
    """The test file's name, or the share of the training file held out as the test split (data.test_fraction)."""
    if data.get("test_fraction"):
        return f"{data['test_fraction']:.0%} of {Path(data.get('train') or '-').name}, held out (data.test_fraction)"
    return Path(data.get("test") or "-").name


def overview(results: SweepResults) -> Section:
    config = results.config
    data = config.get("data", {})
    lines = [
        f"Sweep directory: {results.root}. Task: {config.get('task', {}).get('type', '?')}; "
        f"train: {Path(data.get('train') or '-').name}; test: {test_source(data)}; main metric: {results.metric}.",
        f"Cells: {len(results.cells)} finished, {len(results.failures)} failed, {len(results.pending)} not run "
        f"(of {results.planned}). Report written {datetime.now().isoformat(timespec='seconds')}.",
    ]
    if results.isolation != "process":
        lines.append("Cells ran in one process (isolation: none): peak memory is the process's running maximum, "
                     "not each cell's own.")
    else:
        lines.append("Each cell ran in its own process: peak memory is that cell's (CPU: resident set, "
                     "including the libraries; CUDA: allocated GPU memory).")
    return Section("Overview", [Text(line) for line in lines])


def fmt_value(metric: str, value: float) -> str:
    return f"{value * 100:.1f}" if is_fraction(metric) else f"{value:.2f}"


def ab_section(tests: list[ABResult]) -> Section:
    if not tests:
        return Section("Prompt A/B tests", [Text("No prompt variants were compared (add `sweep.prompts` with two or more variants).")])
    headers = ["strategy", "K", "A", "B", "seeds", "examples", "metric", "A", "B", "A − B [95% CI]",
               "A better", "B better", "p (test)", "winner"]
    body, best = [], []
    for t in tests:
        k = "all" if t.k_shot is None else str(t.k_shot)
        label = t.strategy + (f" ({', '.join(f'{k2}={v}' for k2, v in t.search.items())})" if t.search else "")
        if t.skipped:
            body.append([label, k, t.a, t.b, " ".join(map(str, t.seeds)), "–", t.metric, "–", "–", "–", "–", "–", "–",
                         f"not tested: {t.skipped}"])
            best.append(set())
            continue
        diff = f"{fmt_value(t.metric, t.diff)} [{fmt_value(t.metric, t.low)}, {fmt_value(t.metric, t.high)}]"
        body.append([label, k, t.a, t.b, " ".join(map(str, t.seeds)), str(t.n), t.metric,
                     fmt_value(t.metric, t.score_a), fmt_value(t.metric, t.score_b), diff, str(t.only_a),
                     str(t.only_b), f"{t.p_value:.3g} ({t.test})", t.winner or "no significant difference"])
        best.append({13} if t.winner else set())
    return Section("Prompt A/B tests", [
        Text("Variants of one strategy that differ only in the prompt, scored on the same test examples. Each "
             "example is one pair; A is better on it when A was right in more of the seeds than B (with one seed: "
             "A right, B wrong). p: exact McNemar test with one seed per side, else a paired t-test on the per-example "
             "differences of the seed-averaged correctness; interval: paired bootstrap "
             "(2,000 resamples of the examples) of the difference of the seed-averaged metric. A winner is named "
             "only when p < 0.05."),
        Table(headers, body, best),
    ])


def search_section(choices: list[SearchChoice], metric: str) -> Section:
    if not choices:
        return Section("Hyper-parameter search", [Text("No hyper-parameter search in this sweep.")])
    body, best = [], []
    for choice in choices:
        for combo in choice.combos:
            chosen = combo is choice.chosen
            body.append([
                choice.group, ", ".join(f"{k}={v}" for k, v in combo["search"].items()),
                "–" if combo["dev_mean"] is None else f"{fmt_value(metric, combo['dev_mean'])} ({combo['dev_n']})",
                "–" if combo["test_mean"] is None else f"{fmt_value(metric, combo['test_mean'])} ({combo['test_n']})",
                "chosen" if chosen else "",
            ])
            best.append({1, 4} if chosen else set())
    held = [f"{c.group} {fmt_value(metric, c.held_out_dev)}" for c in choices if c.held_out_dev is not None]
    held_note = (" The chosen combination's mean dev score is the largest of several on the same dev examples, so the "
                 "leaderboard compares a searched row by its dev score held out from that choice (each fold of every "
                 "seed's dev split scored by the combination chosen on the other folds): " + ", ".join(held) + "."
                 ) if held else ""
    return Section("Hyper-parameter search", [
        Text(f"Each combination's mean {metric} over seeds (number of seeds in brackets). The choice uses the dev "
             f"split only; test is shown for transparency, never used to choose.{held_note}"),
        Table(["row", "combination", f"dev {metric}", f"test {metric}", ""], body, best),
    ])


def perturbed_note(metrics: list[str]) -> str:
    if not any(m.startswith(PERTURBED) for m in metrics):
        return ""
    return (" The perturbed column scores the same predictor on a perturbed copy of the test split (typos, word "
            "swaps, word deletions; deterministic by seed; `data.perturbed_test`); – for cells run without it.")


def once_note(results: SweepResults, rows: list[Row]) -> str:
    seeds = (results.config.get("sweep") or {}).get("seeds") or []
    if len(seeds) < 2 or all(len(row.seeds) > 1 for row in rows):
        return ""
    return (" A row with one seed ran once on purpose when its strategy neither trains nor samples (zero-shot "
            "prompting, greedy decoding): every seed would give the same result.")


def setting_text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def chosen_section(rows: list[Row]) -> Section:
    body = []
    for row in rows:
        config = row.config or {}
        train, strategy = config.get("train", {}), dict(config.get("strategy", {}))
        strategy.pop("name", None)
        trains = row.costs.get("trainable_params") != 0  # prompting without training: no optimiser settings
        body.append([
            row.group, config.get("model", {}).get("name", "?") + pooling_note(row),
            json.dumps(strategy) if strategy else "defaults",
            *(setting_text(train.get(key, "?")) if trains else "–" for key in ("learning_rate", "epochs", "batch_size")),
            ", ".join(f"{k}={v}" for k, v in row.search.items()) or "–",
        ])
    return Section("Chosen hyper-parameters", [
        Table(["row", "model", "strategy settings", "learning rate", "epochs", "batch size", "chosen by search"], body)
        if body else Text("No cell has finished yet."),
    ])


def pooling_note(row: Row) -> str:
    """' (mean pooling)' for a classification-head row: the read-out its cells applied (costs.json)."""
    pooling = sorted({c.costs["pooling"] for c in row.cells if c.costs.get("pooling")})
    return f" ({'/'.join(pooling)} pooling)" if pooling else ""


def failure_section(results: SweepResults) -> Section:
    blocks = []
    if results.failures:
        body = [[f["id"], f.get("error_type", "?"), (f.get("message") or "").splitlines()[0][:300] if f.get("message") else "",
                 Link(f["log"], f["log"]) if f.get("log") and (results.root / f["log"]).is_file() else f.get("log", "")]
                for f in results.failures]
        blocks += [Text(f"{len(results.failures)} cell(s) failed; the sweep went on without them. Running "
                        f"`tunelab compare` again retries them."), Table(["cell", "error", "message", "log"], body)]
    else:
        blocks.append(Text("No cell failed."))
    if results.pending:
        blocks.append(Text(f"{len(results.pending)} cell(s) have not run yet (interrupted sweep?): "
                           + ", ".join(c["id"] for c in results.pending[:20]) + (" ..." if len(results.pending) > 20 else "")))
    return Section("Failures", blocks)


def terminal_recommendation(report: Report) -> str:
    """The recommendation block of the report as plain lines, for the terminal summary."""
    import shutil
    import textwrap

    width = min(shutil.get_terminal_size((100, 24)).columns, 100)
    lines = [textwrap.fill(line, width, initial_indent="  ", subsequent_indent="    ")
             for rec in report.recommendations for line in recommendation_lines(rec)]
    return "\n".join(["Recommendation:"] + lines) if lines else ""


def terminal_table(report: Report):
    """The leaderboard as a rich Table (best cells bold green)."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table as RichTable

    headers, body, best = table(report.rows, report.metrics, compact=True)
    # No vertical rules and "82.6±6.7" keep a row on one line of an 80-column terminal; headers may wrap.
    out = RichTable(title=f"{report.results.name}: leaderboard (ranked; mean±std over seeds; bold = best at its K)",
                    box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    body = [[c.replace(" ± ", "±") for c in cells] for cells in body]
    for header in headers:
        out.add_column(header, overflow="fold")
    for cells, marks in zip(body, best):
        out.add_row(*[f"[bold green]{escape(c)}[/bold green]" if i in marks else escape(c) for i, c in enumerate(cells)])
    return out
