"""Reports from synthetic stored results: leaderboard maths, best marks, search choice on dev,
prompt A/B tests, plots, HTML/Markdown/CSV, and `tunelab report` rebuilding from files alone."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tunelab.report import build_report, load_results
from tunelab.report.abtest import prompt_ab_tests
from tunelab.report.leaderboard import build_leaderboard
from tunelab.report.plots import pareto_front
from tunelab.stats import mcnemar_exact, mean_std

TEXTS = [f"example {i}" for i in range(40)]
LABELS = ["positive" if i % 2 else "negative" for i in range(40)]


def predictions(correct: list[bool]) -> list[dict]:
    flip = {"positive": "negative", "negative": "positive"}
    return [{"text": t, "label": y, "prediction": y if ok else flip[y]} for t, y, ok in zip(TEXTS, LABELS, correct)]


def cell(strategy, seed, acc, k=16, variant=None, search=None, dev=None, params=1000, family="fine-tuning",
         correct=None, **costs):
    group = "-".join(p for p in (strategy, f"k{k}", variant) if p)
    parts = [strategy, f"k{k}", variant, "+".join(f"{a}={b}" for a, b in (search or {}).items()) or None, f"seed{seed}"]
    return {
        "meta": {"id": "-".join(p for p in parts if p), "group": group, "strategy": strategy, "method": strategy,
                 "family": family, "k_shot": k, "seed": seed, "variant": variant, "search": search or {},
                 "config": {"model": {"name": "tiny"}, "train": {"learning_rate": 1e-3, "epochs": 3, "batch_size": 8},
                            "strategy": {"name": strategy}}},
        "test": {"accuracy": acc, "f1": acc - 0.01},
        "dev": {"accuracy": dev if dev is not None else acc},
        "costs": {"trainable_params": params, "trainable_percent": params / 1e4, "train_seconds": 10.0,
                  "eval_examples_per_second": 100.0, "peak_memory_mb": 500.0, **costs},
        "predictions": predictions(correct if correct is not None else [True] * 40),
    }


def write_sweep(root: Path, cells: list[dict], failures: list[dict] = (), pending: list[dict] = ()) -> Path:
    root.mkdir(parents=True)
    for c in cells:
        directory = root / c["meta"]["id"]
        directory.mkdir()
        (directory / "cell.json").write_text(json.dumps(c["meta"]))
        (directory / "metrics.json").write_text(json.dumps({"test": c["test"], "dev": c["dev"], "num_test": 40}))
        (directory / "costs.json").write_text(json.dumps(c["costs"]))
        (directory / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in c["predictions"]))
    for f in failures:
        (root / f"{f['id']}.failed.json").write_text(json.dumps(f))
    plan = [c["meta"] for c in cells] + list(failures) + list(pending)
    (root / "sweep.json").write_text(json.dumps({
        "name": "synthetic", "metric": "accuracy", "metrics": ["accuracy", "f1"], "isolation": "process",
        "config": {"name": "synthetic", "data": {"train": "/data/train.jsonl", "test": "/data/test.jsonl"},
                   "sweep": {"seeds": [1, 2, 3]}},
        "cells": [{k: v for k, v in m.items() if k != "config"} for m in plan],
    }))
    return root


def test_leaderboard_mean_std_and_best_marks(tmp_path):
    cells = [cell("head", s, a, params=100, train_seconds=1.0) for s, a in [(1, 0.60), (2, 0.70), (3, 0.65)]]
    cells += [cell("full", s, a, params=10**6, peak_memory_mb=2000.0) for s, a in [(1, 0.80), (2, 0.90), (3, 0.85)]]
    cells += [cell("zero_shot", s, 0.75, params=0, family="prompting", eval_examples_per_second=5.0,
                   peak_memory_mb=900.0) for s in (1, 2, 3)]
    cells += [cell("head", 1, 0.99, k=4, params=100)]  # alone at its K: nothing to beat, nothing marked
    rows, choices = build_leaderboard(load_results(write_sweep(tmp_path / "s", cells)))
    assert choices == []
    by = {(r.strategy, r.k_shot): r for r in rows}
    # ranked by the main metric within each K (sweep order was head, full, zero_shot)
    assert [(r.strategy, r.k_shot) for r in rows] == [("head", 4), ("full", 16), ("zero_shot", 16), ("head", 16)]
    assert by["full", 16].stats["accuracy"] == pytest.approx(mean_std([0.80, 0.90, 0.85]))
    assert by["full", 16].stats["accuracy"][1] == pytest.approx(0.05)
    assert by["full", 16].seeds == [1, 2, 3]
    assert by["full", 16].model == "tiny"
    # only metric columns are marked: the fewest parameters or the fastest evaluation of a worse row is no reason to pick it
    assert by["full", 16].best == {"accuracy", "f1"}
    assert by["zero_shot", 16].best == set() and by["head", 16].best == set()
    assert by["head", 4].best == set()


def test_search_is_chosen_on_dev_never_test(tmp_path):
    # lr=0.1 has the better test score but the worse dev score: the row must use lr=0.01
    cells = [cell("lora", s, 0.60, search={"train.learning_rate": 0.01}, dev=0.9) for s in (1, 2)]
    cells += [cell("lora", s, 0.95, search={"train.learning_rate": 0.1}, dev=0.5) for s in (1, 2)]
    results = load_results(write_sweep(tmp_path / "s", cells))
    rows, choices = build_leaderboard(results)
    assert len(rows) == 1 and rows[0].search == {"train.learning_rate": 0.01}
    assert rows[0].stats["accuracy"][0] == pytest.approx(0.60)
    assert choices[0].chosen["search"] == {"train.learning_rate": 0.01} and len(choices[0].combos) == 2
    md = build_report(results.root).markdown.read_text()
    assert "## Hyper-parameter search" in md and "learning_rate=0.01" in md and "chosen" in md


def test_prompt_ab_mcnemar_and_bootstrap(tmp_path):
    # B is right on 12 more examples than A, in every seed (a deterministic prompt): significant.
    a_correct = [i < 22 for i in range(40)]
    b_correct = [i < 34 for i in range(40)]
    cells = [cell("zero_shot", s, 0.55, variant="A", family="prompting", correct=a_correct) for s in (1, 2, 3)]
    cells += [cell("zero_shot", s, 0.85, variant="B", family="prompting", correct=b_correct) for s in (1, 2, 3)]
    # C differs from A on 3 examples, both ways: no winner may be named
    c_correct = [(0 < i < 22) or i in (30, 31) for i in range(40)]
    cells += [cell("zero_shot", s, 0.6, variant="C", family="prompting", correct=c_correct) for s in (1, 2, 3)]
    results = load_results(write_sweep(tmp_path / "s", cells))
    tests = {(t.a, t.b): t for t in prompt_ab_tests(results.cells, "accuracy", n_resamples=500)}
    assert set(tests) == {("A", "B"), ("A", "C"), ("B", "C")}
    ab = tests["A", "B"]
    # Three identical seeds are the same evidence as one: the examples are the units, not example × seed.
    expected = mcnemar_exact(a_correct, b_correct)
    assert (ab.only_a, ab.only_b, ab.n, ab.seeds) == (0, 12, 40, [1, 2, 3])
    assert ab.p_value == pytest.approx(expected.p_value) and ab.p_value < 0.05
    assert ab.winner == "B"
    assert ab.diff == pytest.approx(22 / 40 - 34 / 40) and ab.low <= ab.diff <= ab.high < 0
    ac = tests["A", "C"]
    assert (ac.only_a, ac.only_b) == (1, 2) and ac.p_value >= 0.05 and ac.winner is None
    md = build_report(results.root).markdown.read_text()
    assert "no significant difference" in md and "| B |" in md.split("## Prompt A/B tests")[1].split("##")[0]


def test_ab_counts_per_example_over_seeds(tmp_path):
    """An example is A's when A was right in more seeds than B; seeds that disagree partly cancel."""
    base = [True] * 40
    seeds_a = {1: base, 2: base, 3: [i != 0 for i in range(40)]}       # example 0: A right in 2 of 3 seeds
    seeds_b = {1: [i != 0 for i in range(40)], 2: [i != 0 for i in range(40)], 3: base}  # B right in 1 of 3
    seeds_b = {s: [ok and i != 1 for i, ok in enumerate(v)] for s, v in seeds_b.items()}  # example 1: B never right
    cells = [cell("few_shot", s, 0.5, variant="A", family="prompting", correct=seeds_a[s]) for s in (1, 2, 3)]
    cells += [cell("few_shot", s, 0.5, variant="B", family="prompting", correct=seeds_b[s]) for s in (1, 2, 3)]
    [test] = prompt_ab_tests(load_results(write_sweep(tmp_path / "s", cells)).cells, "accuracy", n_resamples=200)
    assert (test.only_a, test.only_b, test.n) == (2, 0, 40)
    acc_a = (40 + 40 + 39) / 120
    acc_b = (38 + 38 + 39) / 120
    assert test.score_a == pytest.approx(acc_a) and test.diff == pytest.approx(acc_a - acc_b)
    # shares differ (several seeds): a paired t-test on the per-example differences 1/3 (example 0), 1 (example 1)
    from scipy.stats import ttest_1samp

    assert test.test == "paired t-test" and test.right_diff == pytest.approx((1 / 3 + 1) / 40)
    assert test.p_value == pytest.approx(ttest_1samp([1 / 3, 1] + [0] * 38, 0).pvalue) and test.winner is None


def test_ab_test_skips_variants_scored_on_different_examples(tmp_path):
    cells = [cell("zero_shot", 1, 0.5, variant="A", family="prompting"),
             cell("zero_shot", 1, 0.5, variant="B", family="prompting")]
    cells[1]["predictions"] = cells[1]["predictions"][:-1]
    results = load_results(write_sweep(tmp_path / "s", cells))
    [test] = prompt_ab_tests(results.cells, "accuracy")
    assert "different examples" in test.skipped and test.winner is None


def test_ab_bootstrap_on_a_non_accuracy_metric(tmp_path):
    cells = [cell("few_shot", 1, 0.5, variant=v, family="prompting", correct=[i < n for i in range(40)])
             for v, n in (("A", 20), ("B", 38))]
    results = load_results(write_sweep(tmp_path / "s", cells))
    [test] = prompt_ab_tests(results.cells, "f1", n_resamples=200)
    assert test.metric == "f1" and test.score_b > test.score_a and test.high < 0


def test_pareto_front():
    points = [(1, 70.0), (100, 60.0), (1000, 80.0), (1000, 75.0), (10**6, 85.0), (10**7, 84.0)]
    assert pareto_front(points) == [0, 2, 4]
    assert pareto_front(points, higher=False) == [0, 1]


def test_report_files_and_cli_rebuild_from_stored_results(tmp_path, monkeypatch, capsys):
    from tunelab import models
    from tunelab.cli import main

    def no_models(*args, **kwargs):
        raise AssertionError("the report must not load a model")

    monkeypatch.setattr(models, "load_model", no_models)
    cells = [cell(s, seed, a + 0.01 * seed, params=p) for s, a, p in (("head", 0.6, 100), ("lora", 0.8, 5000)) for seed in (1, 2, 3)]
    cells += [cell("head", seed, 0.5 + 0.05 * seed, k=4, params=100) for seed in (1, 2, 3)]
    failure = {"id": "bitfit-k16-seed1", "group": "bitfit-k16", "strategy": "bitfit", "k_shot": 16, "seed": 1,
               "error_type": "RuntimeError", "message": "deliberately broken", "log": "logs/bitfit-k16-seed1.log"}
    pending = [{"id": "bitfit-k16-seed2", "group": "bitfit-k16", "strategy": "bitfit", "k_shot": 16, "seed": 2}]
    root = write_sweep(tmp_path / "runs" / "synthetic", cells, [failure], pending)

    assert main(["report", str(tmp_path / "runs")]) == 0  # a folder of sweeps works too
    out = capsys.readouterr().out
    assert f"report: {root / 'report.html'}" in out and "lora" in out
    html = (root / "report.html").read_text()
    assert '<table class="leaderboard sortable">' in html and html.count('<img src="data:image/png;base64,') == 4
    assert "lora" in html and "deliberately broken" in html and "bitfit-k16-seed2" in html
    assert '<td class="best">' in html
    md = (root / "report.md").read_text()
    for heading in ("## Leaderboard", "## Plots", "## Prompt A/B tests", "## Failures", "## Chosen hyper-parameters",
                    "## Resolved configuration"):
        assert heading in md
    assert "| [lora](#row-lora-k16) | tiny | fine-tuning | 16 | **82.0 ± 1.0** |" in md  # linked to its drill-down
    assert "![pareto](plots/pareto.png)" in md
    for name in ("pareto.png", "costs.png", "metric_vs_k.png", "seed_spread.png"):
        assert (root / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(open(root / "leaderboard.csv")))
    lora = next(r for r in rows if r["strategy"] == "lora")
    assert float(lora["accuracy_mean"]) == pytest.approx(0.82) and lora["seeds"] == "1 2 3"
    assert "accuracy" in lora["best"].split(";")

    for name in ("report.html", "report.md", "leaderboard.csv"):
        (root / name).unlink()
    assert main(["report", str(root)]) == 0
    assert (root / "report.html").read_text() .count("data:image/png;base64,") == 4


def test_report_of_a_directory_without_sweep_exits_2(tmp_path, capsys):
    from tunelab.cli import main

    assert main(["report", str(tmp_path)]) == 2
    assert "no sweep" in capsys.readouterr().err


def test_terminal_leaderboard_fits_80_columns_and_explains_single_seed_rows(tmp_path):
    """Long row labels, ± values and 9 columns: every row stays whole on one line of a default terminal."""
    from rich.console import Console

    from tunelab.report import terminal_table

    cells = [cell("prompt_tuning", seed, 0.5 + 0.01 * seed, params=134_520_000, peak_memory_mb=3638.0,
                  eval_examples_per_second=440.9) for seed in (1, 2, 3)]
    cells += [cell("zero_shot", 1, 0.896, variant="review", params=0, family="prompting")]
    report = build_report(write_sweep(tmp_path / "sweep", cells))
    console = Console(width=80, record=True)
    console.print(terminal_table(report))
    lines = console.export_text().splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    row = next(line for line in lines if line.startswith("prompt_tuning"))
    assert "52.0±1.0" in row  # mean ± std on the row's own line
    assert "134.52M" in row and "3,638" in row
    assert next(line for line in lines if line.startswith("zero_shot [review]")).split()[3] == "89.6"
    assert "ran once on purpose" in report.markdown.read_text()  # 1 of the sweep's 3 seeds, explained


def test_one_k_draws_no_metric_vs_k_plot_and_removes_a_stale_one(tmp_path):
    cells = [cell(s, seed, 0.6 + 0.01 * seed) for s in ("head", "lora") for seed in (1, 2)]
    root = write_sweep(tmp_path / "sweep", cells)
    (root / "plots").mkdir()
    (root / "plots" / "metric_vs_k.png").write_bytes(b"stale")
    report = build_report(root)
    assert sorted(p.name for p in (root / "plots").iterdir()) == ["costs.png", "pareto.png", "seed_spread.png"]
    md = report.markdown.read_text()
    assert "metric_vs_k" not in md and "two or more K values" in md


def test_point_labels_of_close_points_do_not_overlap():
    from tunelab.report.plots import label_offsets

    anchors = [(100.0, 200.0), (104.0, 201.0), (300.0, 200.0), (102.0, 199.0)]  # three nearly on one spot
    offsets = label_offsets(anchors, ["lora", "adapter", "full", "prompt_tuning"])
    assert offsets[0] == (5.0, 4.0) and offsets[2] == (5.0, 4.0)  # free spots keep the default place
    tops = sorted(anchors[i][1] + offsets[i][1] for i in (0, 1, 3))
    assert all(b - a >= 8 * 1.25 - 1e-9 for a, b in zip(tops, tops[1:]))  # stacked a line apart
