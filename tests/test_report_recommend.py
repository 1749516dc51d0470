"""The report's recommendation, ranking, intervals, error analysis and drill-down, from synthetic
stored results (no model is trained or loaded)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from tunelab.report import build_report, load_results
from tunelab.report.errors import analyse
from tunelab.report.leaderboard import build_leaderboard
from tunelab.report.recommend import MEANINGFUL, recommend, row_examples
from tunelab.stats import min_detectable_difference

CLASSES = ["negative", "positive"]


def predictions(correct: list[bool], labels: list[str] | None = None, constant: str | None = None) -> list[dict]:
    labels = labels or [CLASSES[i % 2] for i in range(len(correct))]
    out = []
    for i, (ok, gold) in enumerate(zip(correct, labels)):
        wrong = next(c for c in CLASSES if c != gold)
        pred = constant or (gold if ok else wrong)
        out.append({"text": f"example {i}", "label": gold, "prediction": pred,
                    "scores": {c: (0.9 if c == pred else 0.1) for c in CLASSES}})
    return out


def cell(strategy, seed, rows, dev, model="small", total=10**6, params=100, train_seconds=10.0, k=16,
         family="fine-tuning", extra=None):
    acc = sum(r["label"] == r["prediction"] for r in rows) / len(rows)
    return {"meta": {"id": f"{strategy}-k{k}-seed{seed}", "group": f"{strategy}-k{k}", "strategy": strategy,
                     "method": strategy, "family": family, "k_shot": k, "seed": seed, "variant": None, "search": {},
                     "config": {"model": {"name": model}, "strategy": {"name": strategy}}},
            "test": {"accuracy": acc}, "dev": {"accuracy": dev}, "predictions": rows,
            "costs": {"trainable_params": params, "total_params": total, "train_seconds": train_seconds,
                      "eval_examples_per_second": 100.0, "peak_memory_mb": 500.0},
            **(extra or {})}


def write_sweep(root: Path, cells: list[dict], task: dict | None = None) -> Path:
    root.mkdir(parents=True)
    (root / "logs").mkdir()
    for c in cells:
        d = root / c["meta"]["id"]
        d.mkdir()
        (d / "cell.json").write_text(json.dumps(c["meta"]))
        (d / "metrics.json").write_text(json.dumps({"test": c["test"], "dev": c["dev"], "num_test": len(c["predictions"] or [])}))
        if c.get("costs") is not None:
            (d / "costs.json").write_text(json.dumps(c["costs"]))
        if c.get("predictions") is not None:
            (d / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in c["predictions"]))
        (d / "config.yaml").write_text("name: x\n")
        (root / "logs" / f"{c['meta']['id']}.log").write_text("log\n")
        if c.get("logs_csv"):
            (d / "logs.csv").write_text(c["logs_csv"])
    (root / "sweep.json").write_text(json.dumps({
        "name": "synthetic", "metric": "accuracy", "metrics": ["accuracy"], "isolation": "process",
        "config": {"name": "synthetic", "task": task or {"type": "classification", "label_names": CLASSES},
                   "data": {}, "sweep": {"seeds": [1, 2]}},
        "cells": [{k: v for k, v in c["meta"].items() if k != "config"} for c in cells],
    }))
    return root


def recommendation(root: Path):
    results = load_results(root)
    rows, _ = build_leaderboard(results)
    [rec] = recommend(rows, results.metric, {r.group: row_examples(r) for r in rows}, n_resamples=500)
    return rows, rec


def flips(n: int, wrong: set[int]) -> list[bool]:
    return [i not in wrong for i in range(n)]


def test_pick_is_the_cheapest_row_tied_with_the_dev_best(tmp_path):
    n = 40
    big = flips(n, {0, 1, 2, 3})               # 90%
    small = flips(n, {0, 1, 2, 3, 4, 5})       # 85%: 2 examples apart from big, tied
    tiny_bad = flips(n, set(range(0, 40, 2)))  # 50%: 16 examples worse, not tied
    cells = [cell("big", s, predictions(big), dev=0.95, model="large-lm", total=10**8, params=10**8) for s in (1, 2)]
    cells += [cell("small", s, predictions(small), dev=0.85, params=100) for s in (1, 2)]
    cells += [cell("tiny", s, predictions(tiny_bad), dev=0.60, params=10) for s in (1, 2)]
    rows, rec = recommendation(write_sweep(tmp_path / "s", cells))
    assert rec.best.strategy == "big" and rec.pick.strategy == "small"
    assert [r.strategy for r in rec.tied] == ["small"]
    small_test, tiny_test = rec.tests["small-k16"], rec.tests["tiny-k16"]
    assert small_test.p_value >= 0.05 and (small_test.only_a, small_test.only_b) == (2, 0)
    assert small_test.diff == pytest.approx(0.05) and small_test.low <= 0.05 <= small_test.high
    assert tiny_test.p_value < 0.05
    verdicts = {r.strategy: r.verdict for r in rows}
    assert verdicts["big"] == "best on dev" and verdicts["small"].startswith("cheapest tied")
    assert verdicts["tiny"].startswith("worse on test")
    assert "verdict" in next(r for r in rows if r.strategy == "small").best  # the pick's mark


def test_pick_stays_the_dev_best_when_the_cheaper_rows_are_worse(tmp_path):
    n = 40
    cells = [cell("big", s, predictions(flips(n, {0})), dev=0.95, total=10**8, params=10**8) for s in (1, 2)]
    cells += [cell("cheap", s, predictions(flips(n, set(range(0, 40, 3)))), dev=0.7, params=10) for s in (1, 2)]
    _, rec = recommendation(write_sweep(tmp_path / "s", cells))
    assert rec.best.strategy == "big" and rec.pick is rec.best and rec.tied == []
    assert rec.tests["cheap-k16"].p_value < 0.05


def test_dev_ties_go_to_the_cheapest_and_test_never_chooses(tmp_path):
    # "better" has the better test score but the worse dev score: dev decides
    cells = [cell("better", 1, predictions(flips(40, set())), dev=0.7),
             cell("devbest", 1, predictions(flips(40, set(range(10)))), dev=0.9, params=1000),
             cell("devbest_cheap", 1, predictions(flips(40, set(range(10)))), dev=0.9, params=10)]
    _, rec = recommendation(write_sweep(tmp_path / "s", cells))
    assert rec.best.strategy == "devbest_cheap" and {r.strategy for r in rec.dev_ties} == {"devbest", "devbest_cheap"}


@pytest.mark.parametrize("order", [("few_shot", "zero_shot"), ("zero_shot", "few_shot")])
def test_prompting_rows_tied_on_dev_go_to_the_faster_evaluation(tmp_path, order):
    """Nothing trains in either (0 parameters, 0 s): the few-shot prompt's demonstrations slow every prediction."""
    speeds = {"few_shot": 1.4, "zero_shot": 2.0}
    cells = []
    for name in order:  # the order the rows come in must not decide
        c = cell(name, 1, predictions(flips(40, set(range(10)))), dev=0.9, params=0, train_seconds=0.0, family="prompting")
        c["costs"]["eval_examples_per_second"] = speeds[name]
        cells.append(c)
    _, rec = recommendation(write_sweep(tmp_path / "s", cells))
    assert rec.best.strategy == "zero_shot" and rec.pick.strategy == "zero_shot"


def balanced_disagreement(n: int) -> tuple[list[bool], list[bool]]:
    """Two systems right on the same 80%, except 5% of examples each gets right and the other wrong."""
    a = [i % 20 not in (0, 1, 2, 3) for i in range(n)]
    b = list(a)
    for i in range(n):
        if i % 20 == 0:
            a[i], b[i] = True, False
        elif i % 20 == 1:
            a[i], b[i] = False, True
    return a, b


@pytest.mark.parametrize("n, warned", [(40, True), (4000, False)])
def test_small_test_split_warns_with_the_detectable_difference(tmp_path, n, warned):
    a, b = balanced_disagreement(n)
    cells = [cell("big", 1, predictions(a), dev=0.9, model="large-lm", total=10**8), cell("small", 1, predictions(b), dev=0.8)]
    _, rec = recommendation(write_sweep(tmp_path / "s", cells))
    assert rec.pick.strategy == "small" and rec.tests["small-k16"].p_value == pytest.approx(1.0)
    assert rec.n == n and rec.discordant == pytest.approx(0.1)
    assert rec.mde == pytest.approx(min_detectable_difference(n, 0.1))
    assert (rec.mde > MEANINGFUL) is warned
    assert bool(rec.warning) is warned
    if warned:
        assert f"{n} test examples are too few" in rec.warning and f"{rec.mde * 100:.1f} points" in rec.warning


def test_min_detectable_difference_solves_connor_formula():
    from scipy.stats import norm

    for n, psi in ((48, 0.2), (1821, 0.15), (500, 0.05)):
        d = min_detectable_difference(n, psi)
        z_a, z_b = norm.ppf(0.975), norm.ppf(0.8)
        needed = (z_a * math.sqrt(max(psi, d)) + z_b * math.sqrt(max(psi, d) - d * d)) ** 2 / d ** 2
        assert needed == pytest.approx(n, rel=1e-6)
    assert min_detectable_difference(48, 0.2) > min_detectable_difference(480, 0.2)  # more examples, finer
    assert min_detectable_difference(2, 0.5) == 1.0  # nothing is detectable on 2 examples


def test_rows_are_ranked_by_test_metric_with_bootstrap_intervals(tmp_path):
    cells = [cell("mid", 1, predictions(flips(40, set(range(20)))), dev=0.9),       # 50%
             cell("top", 1, predictions(flips(40, set())), dev=0.5),                 # 100%
             cell("low", 1, predictions(flips(40, set(range(30)))), dev=0.6)]        # 25%
    rows, _ = recommendation(write_sweep(tmp_path / "s", cells))
    assert [r.strategy for r in rows] == ["top", "mid", "low"]
    by = {r.strategy: r for r in rows}
    assert by["top"].interval == pytest.approx((1.0, 1.0))  # right everywhere: no resample can move it
    low, high = by["mid"].interval
    assert low < 0.5 < high and 0.2 < high - low < 0.45  # ≈ ±1.96·√(.25/40) = ±0.155


def test_one_class_warning_and_confusion_counts(tmp_path):
    labels = ["a", "a", "a", "b", "b", "c"]
    rows_h = [{"text": f"t{i}", "label": g, "prediction": p, "scores": {"a": 0.0, "b": 0.0, "c": 0.0, p: 2.0}}
              for i, (g, p) in enumerate(zip(labels, ["a", "b", "a", "b", "a", "c"]))]
    constant = [{"text": f"t{i}", "label": g, "prediction": "a"} for i, g in enumerate(labels)]
    cells = [cell("hand", 1, rows_h, dev=0.9), cell("const", 1, constant, dev=0.5)]
    root = write_sweep(tmp_path / "s", cells, task={"type": "classification", "label_names": ["a", "b", "c"]})
    rows, _ = recommendation(root)
    by = {r.strategy: r for r in rows}
    hand = analyse(by["hand"], row_examples(by["hand"]), ["a", "b", "c"])
    assert hand.classes == ["a", "b", "c"]
    assert dict(hand.confusion["a"]) == {"a": 2, "b": 1} and dict(hand.confusion["b"]) == {"b": 1, "a": 1}
    assert dict(hand.confusion["c"]) == {"c": 1}
    precision, recall, f1, support = hand.per_class["a"]
    assert (precision, recall, support) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 3)
    assert hand.per_class["b"][:2] == (pytest.approx(0.5), pytest.approx(0.5))
    assert not hand.one_class
    # the most confidently wrong: softmax of the scores gives the wrong label e²/(e²+2)
    assert [w["text"] for w in hand.wrong] == ["t1", "t4"]
    assert hand.wrong[0]["confidence"] == pytest.approx(math.exp(2) / (math.exp(2) + 2))
    const = analyse(by["const"], row_examples(by["const"]), ["a", "b", "c"])
    assert const.one_class and const.majority == ("a", 1.0) and const.per_class["b"][:3] == (0.0, 0.0, 0.0)
    md = build_report(root).markdown.read_text()
    section = md.split("## Error analysis")[1].split("\n## ")[0]
    assert "| const | 16 | a | 100% | **predicts (almost) one class** |" in section
    const_row = next(line for line in md.splitlines() if line.startswith("| [const]"))
    assert const_row.endswith("; one class (100% 'a') |")  # the leaderboard says it too
    assert "| hand | 16 | b | 33% |  |" in section or "| hand | 16 | a | 50% |  |" in section
    assert "| a | 66.7 | 66.7 | 66.7 | 3 | 2 | 1 | 0 |" in section  # gold a: 2 → a, 1 → b, 0 → c


def test_one_class_best_is_warned_in_the_recommendation(tmp_path):
    cells = [cell("const", 1, predictions([True] * 40, constant="positive"), dev=0.99),
             cell("real", 1, predictions(flips(40, {0, 1})), dev=0.8, total=10**9)]
    report = build_report(write_sweep(tmp_path / "s", cells))
    lines = " ".join(t for rec in report.recommendations for t in rec.warnings)
    assert "const predicts 'positive' for 100% of the test examples" in lines
    assert "Warning: const predicts 'positive'" in report.markdown.read_text().split("## Overview")[0]


LOGS_CSV = ("step,epoch,eval_loss,eval_accuracy,loss\n4,1.0,0.7,0.6,\n5,1.5,,,0.65\n8,2.0,0.5,0.8,\n"
            "8,2.0,,,0.4\n")


def test_page_links_curves_viewport_and_sortable_tables(tmp_path, capsys):
    from tunelab.cli import main

    cells = [cell("lora", s, predictions(flips(40, {s})), dev=0.8, extra={"logs_csv": LOGS_CSV}) for s in (1, 2)]
    cells += [cell("zero_shot", 1, predictions(flips(40, {3, 4})), dev=0.7, params=0, family="prompting")]
    root = write_sweep(tmp_path / "s", cells)
    (root / "zero_shot-k16-seed1" / "config.yaml").unlink()  # a file that is not there gets no link
    failed = {"id": "bitfit-k16-seed1", "group": "bitfit-k16", "strategy": "bitfit", "k_shot": 16, "seed": 1,
              "error_type": "RuntimeError", "message": "broken", "log": "logs/bitfit-k16-seed1.log"}
    (root / "bitfit-k16-seed1.failed.json").write_text(json.dumps(failed))
    (root / "logs" / "bitfit-k16-seed1.log").write_text("Traceback ...\n")
    plan = json.loads((root / "sweep.json").read_text())
    plan["cells"].append({k: failed[k] for k in ("id", "group", "strategy", "k_shot", "seed")})
    (root / "sweep.json").write_text(json.dumps(plan))
    assert main(["report", str(root)]) == 0
    out = capsys.readouterr().out
    assert "Recommendation:" in out and "Pick zero_shot (small)" in out and "Warning: 40 test examples" in out
    html = (root / "report.html").read_text()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert 'class="leaderboard sortable"' in html and 'querySelectorAll("table.sortable th")' in html
    assert '<div class="scroll">' in html
    assert html.index("<h2 id=\"recommendation\">") < html.index("<h2 id=\"leaderboard\">")
    assert '<p class="pick">K=16: Pick zero_shot (small)' in html and '<p class="warning">Warning: 40 test' in html
    links = re.findall(r'href="([^"]+)"', html)
    files = [unquote(h) for h in links if not h.startswith("#")]
    assert "lora-k16-seed2/predictions.jsonl" in files and "logs/lora-k16-seed1.log" in files
    assert "zero_shot-k16-seed1/config.yaml" not in files and "zero_shot-k16-seed1/metrics.json" in files
    assert "logs/bitfit-k16-seed1.log" in files  # a failed cell's log, from the Failures section
    assert all((root / f).is_file() for f in files)
    anchors = [h[1:] for h in links if h.startswith("#")]
    assert anchors and all(f'<a id="{a}"></a>' in html for a in anchors)
    # learning curves: drawn for the row with logs.csv, explained for the one without
    assert (root / "plots" / "curves_lora-k16.png").read_bytes()[:4] == b"\x89PNG"
    assert not (root / "plots" / "curves_zero_shot-k16.png").exists()
    assert "No learning curves" in html and "learning curves of lora" in html
    assert html.count("data:image/png;base64,") == 4  # pareto, costs, seed spread, one curve


def test_old_cells_generation_and_missing_predictions_do_not_break_the_report(tmp_path):
    gen = [{"text": f"q{i}", "target": f"a{i}", "prediction": f"a{i}" if i % 2 else "x"} for i in range(10)]
    cells = [cell("generate", 1, [dict(r, label=r["target"]) for r in gen], dev=0.5),
             cell("cot", 1, [dict(r, label=r["target"]) for r in gen], dev=0.4)]
    for c in cells:
        c["predictions"] = gen  # generation rows: a target, no label
    old = cell("old", 1, [dict(r, label=r["target"]) for r in gen], dev=0.3)
    old["predictions"], old["costs"] = None, None  # a cell from an older version: no predictions, no costs
    cells.append(old)
    root = write_sweep(tmp_path / "s", cells, task={"type": "generation"})
    report = build_report(root)
    md = report.markdown.read_text()
    assert "No error analysis: the task has no classes" in md
    by = {r.strategy: r for r in report.rows}
    assert by["old"].interval is None and by["old"].verdict == "not tested (no readable predictions)"
    assert by["cot"].verdict.startswith("tied")
    assert "| [old](#row-old-k16) | small | fine-tuning | 16 | **50.0** | – | 1 | – | – | – | – | not tested" in md


def test_text_overlap_metric_ties_by_the_bootstrap_interval_not_exact_match(tmp_path):
    """ROUGE: no generated summary matches its target exactly, so McNemar on exact match would tie every row."""
    targets = [f"the council approved the new park plan number {i}" for i in range(30)]
    close = [{"text": f"doc {i}", "target": t, "prediction": t + " today"} for i, t in enumerate(targets)]
    far = [{"text": f"doc {i}", "target": t, "prediction": "stocks fell sharply"} for i, t in enumerate(targets)]
    cells = [cell("sft", 1, [dict(r, label=r["target"]) for r in close], dev=0.6, total=10**8),
             cell("zero_shot", 1, [dict(r, label=r["target"]) for r in far], dev=0.1, params=0)]
    for c, rows in zip(cells, (close, far)):
        c["predictions"], c["test"], c["dev"] = rows, {"rouge1": 0.9 if rows is close else 0.05}, {"rouge1": c["dev"]["accuracy"]}
    root = write_sweep(tmp_path / "s", cells, task={"type": "generation"})
    plan = json.loads((root / "sweep.json").read_text())
    (root / "sweep.json").write_text(json.dumps({**plan, "metric": "rouge1", "metrics": ["rouge1"]}))
    rows, rec = recommendation(root)
    test = rec.tests["zero_shot-k16"]
    assert test.p_value == 1.0  # exact match: both wrong everywhere
    assert test.low > 0 and rec.tied == [] and rec.pick.strategy == "sft"
    assert next(r for r in rows if r.strategy == "zero_shot").verdict.startswith("worse on test (difference in [")
    assert rec.mde is None and rec.warning == ""  # the detectable difference is for right/wrong scores only


def test_the_detectable_difference_is_named_by_the_metric_it_is_for(tmp_path):
    """Exact match is right/wrong per example like accuracy: the detectable difference is stated, in its own name."""
    a, b = balanced_disagreement(40)
    cells = []
    for name, right, dev in (("sft", a, 0.9), ("few_shot", b, 0.5)):
        rows = [{"text": f"q {i}", "target": str(i), "label": str(i), "prediction": str(i) if ok else "no"}
                for i, ok in enumerate(right)]
        cells.append(cell(name, 1, rows, dev=0.0, total=10**8))
        cells[-1]["test"], cells[-1]["dev"] = {"exact_match": sum(right) / 40}, {"exact_match": dev}
    root = write_sweep(tmp_path / "s", cells, task={"type": "generation"})
    plan = json.loads((root / "sweep.json").read_text())
    (root / "sweep.json").write_text(json.dumps({**plan, "metric": "exact_match", "metrics": ["exact_match"]}))
    _, rec = recommendation(root)
    assert rec.mde is not None and "only exact_match differences of" in rec.warning and "accuracy" not in rec.warning


def epoch_log(dev_scores: list[float]) -> str:
    return "epoch,eval_accuracy,loss\n" + "".join(f"{i + 1},{v},\n" for i, v in enumerate(dev_scores))


@pytest.mark.parametrize("last_epochs, warned", [(0.75, True), (0.88, False)])
def test_a_dev_best_row_that_chose_its_epoch_on_dev_is_flagged_against_a_row_that_chose_nothing(tmp_path, last_epochs, warned):
    """pet-like rows report their best epoch's dev score; a setfit-like row one honest score. The warning reads
    the per-epoch dev log only: when the last epochs sit below the rival's dev score, the lead may be selection."""
    n = 40
    cells = [cell("pet", s, predictions(flips(n, {0, 1, 2, 3, 4, 5})), dev=0.90, model="lm", total=10**8,
                  extra={"logs_csv": epoch_log([0.6, 0.9, last_epochs])}) for s in (1, 2)]
    cells += [cell("setfit", s, predictions(flips(n, {0})), dev=0.85, model="encoder", total=10**8) for s in (1, 2)]
    cells += [cell("zero_shot", 1, predictions(flips(n, set(range(10)))), dev=0.70, model="lm", total=10**8, params=0)]
    _, rec = recommendation(write_sweep(tmp_path / "s", cells))
    assert rec.best.strategy == "pet"  # dev still chooses: the warning informs, it does not overrule
    flagged = [w for w in rec.warnings if "best epoch" in w]
    if warned:
        assert flagged == [f"pet's dev accuracy 90.0 is that of its best epoch, chosen on the same dev split (its last "
                           f"epochs: 75.0); setfit (85.0) chose nothing on dev, so its dev score is not inflated the "
                           f"same way: with a dev split this small, it may be the better choice."]
    else:
        assert flagged == []


def test_a_row_compared_by_its_held_out_dev_score_is_not_flagged(tmp_path):
    """Cells trained since the held-out dev score report a dev score their epoch choice has not seen: the same
    per-epoch log no longer makes their dev lead suspect."""
    n = 40
    cells = [cell("pet", s, predictions(flips(n, {0, 1, 2, 3, 4, 5})), dev=0.90, model="lm", total=10**8,
                  extra={"logs_csv": epoch_log([0.6, 0.9, 0.75])}) for s in (1, 2)]
    for c in cells:
        c["costs"]["held_out_dev"] = {"accuracy": 0.9}
    cells += [cell("setfit", s, predictions(flips(n, {0})), dev=0.85, model="encoder", total=10**8) for s in (1, 2)]
    _, rec = recommendation(write_sweep(tmp_path / "s", cells))
    assert rec.best.strategy == "pet" and [w for w in rec.warnings if "best epoch" in w] == []


def test_an_ensemble_is_named_by_its_members_models_and_never_the_cheapest(tmp_path):
    """Its cells carry the experiment's own model name; the leaderboard names its members' models, and its size
    is its own (the members' summed), so a tie with a member never makes it "the cheapest"."""
    n = 40
    cells = [cell("big", s, predictions(flips(n, {0, 1})), dev=0.95, model="large-lm", total=10**8) for s in (1, 2)]
    cells += [cell("small", s, predictions(flips(n, set(range(20)))), dev=0.80, model="small", total=10**6) for s in (1, 2)]
    for s in (1, 2):
        ens = cell("ens", s, predictions(flips(n, {0, 1, 2})), dev=0.90, model="small", total=10**8 + 10**6,
                   family="ensemble")
        ens["costs"]["member_cells"] = [f"big-k16-seed{s}", f"small-k16-seed{s}"]
        cells.append(ens)
    rows, rec = recommendation(write_sweep(tmp_path / "s", cells))
    ensemble = next(r for r in rows if r.strategy == "ens")
    assert ensemble.model == "large-lm + small"
    assert rec.best.strategy == "big" and [r.strategy for r in rec.tied] == ["ens"]
    assert rec.pick.strategy == "big"  # tied, but larger than big alone: not the cheaper choice


def test_an_ensemble_over_a_pattern_ensemble_is_named_by_its_member_cells(tmp_path):
    """pet_ensemble's (and ipet's) costs list its patterns under "members"; the leaderboard names an ensemble by the
    cells it averages ("member_cells"), so a pattern ensemble as a member neither breaks the report nor names it."""
    n = 40
    cells = [cell("patterns", s, predictions(flips(n, {0, 1})), dev=0.95, model="lm", total=10**8) for s in (1, 2)]
    for c in cells:
        c["costs"]["members"] = [{"dev": {"accuracy": 0.9}, "best_epoch": 3}, {"dev": {"accuracy": 0.8}, "best_epoch": 5}]
    cells += [cell("encoder", s, predictions(flips(n, {5})), dev=0.85, model="mpnet", total=10**8) for s in (1, 2)]
    for s in (1, 2):
        ens = cell("ens", s, predictions(flips(n, {0})), dev=0.96, model="small", total=2 * 10**8, family="ensemble")
        ens["costs"]["member_cells"] = [f"patterns-k16-seed{s}", f"encoder-k16-seed{s}"]
        cells.append(ens)
    rows, _ = recommendation(write_sweep(tmp_path / "s", cells))
    assert {r.strategy: r.model for r in rows} == {"patterns": "lm", "encoder": "mpnet", "ens": "lm + mpnet"}


def searched_cell(seed: int, lr: float, dev_rows: list[dict], dev: float, test_rows: list[dict]) -> dict:
    c = cell("lora", seed, test_rows, dev=dev)
    c["meta"].update(id=f"lora-k16-lr{lr}-seed{seed}", search={"train.learning_rate": lr})
    c["dev_rows"] = dev_rows
    return c


def test_a_searched_row_is_compared_by_its_dev_score_held_out_from_the_search(tmp_path):
    """Two learning rates on 20 dev examples per seed: lr 0.1 is right on fold 0 only, lr 0.01 on folds 1–2 only.
    On the whole splits lr 0.01 wins (0.2 against 0.1); held out, each fold is scored by the rate chosen on the
    others, which is never the one right there: the searched row's dev score is 0."""
    import numpy as np

    from tunelab.held_out_dev import FOLDS, stratified_folds

    n, gold = 40, [CLASSES[i % 2] for i in range(20)]
    cells = []
    for seed in (1, 2):
        fold = stratified_folds(np.unique(gold, return_inverse=True)[1], seed, FOLDS)
        for lr, right_on in ((0.1, {0}), (0.01, {1, 2})):
            rows = [{"text": f"dev {i}", "label": g, "prediction": g if int(f) in right_on else CLASSES[1 - i % 2]}
                    for i, (g, f) in enumerate(zip(gold, fold))]
            cells.append(searched_cell(seed, lr, rows, dev=0.2 if lr == 0.01 else 0.1, test_rows=predictions(flips(n, {0, 1}))))
    cells += [cell("setfit", s, predictions(flips(n, {0})), dev=0.05, model="encoder") for s in (1, 2)]
    root = write_sweep(tmp_path / "s", cells)
    for c in cells:
        if "dev_rows" in c:
            (root / c["meta"]["id"] / "dev_predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in c["dev_rows"]))
    rows, rec = recommendation(root)
    lora = next(r for r in rows if r.strategy == "lora")
    assert lora.search == {"train.learning_rate": 0.01}  # the row shown is still the whole-dev choice
    assert lora.dev == [0.0, 0.0] and rec.best.strategy == "setfit"
    report = build_report(root)
    search = report.markdown.read_text().split("## Hyper-parameter search")[1].split("## ")[0]
    assert "held out from that choice" in search and "lora-k16 0.0" in search


def test_a_search_without_stored_dev_outputs_keeps_its_chosen_mean(tmp_path):
    cells = [searched_cell(s, lr, [], dev=d, test_rows=predictions(flips(40, {0}))) for s in (1, 2)
             for lr, d in ((0.1, 0.7), (0.01, 0.6))]
    rows, _ = recommendation(write_sweep(tmp_path / "s", cells))
    assert next(r for r in rows if r.strategy == "lora").dev == [0.7, 0.7]


def dev_outputs(n: int, wrong: set[int], seed: int) -> list[dict]:
    return [{"text": f"dev {seed}-{i}", "label": CLASSES[i % 2],
             "prediction": CLASSES[i % 2] if i not in wrong else CLASSES[1 - i % 2]} for i in range(n)]


@pytest.mark.parametrize("runner_wrong, warned", [({1, 2}, True), (set(range(16)), False)])
def test_a_dev_lead_the_dev_split_cannot_back_is_flagged(tmp_path, runner_wrong, warned):
    """32 dev examples per seed, 2 seeds: setfit wrong on one, pet on two others (6 discordant pairs of 64) is no
    evidence; pet wrong on 16 is."""
    cells = [cell("setfit", s, predictions(flips(40, {0})), dev=31 / 32, model="encoder") for s in (1, 2)]
    cells += [cell("pet", s, predictions(flips(40, {0, 1})), dev=1 - len(runner_wrong) / 32, model="lm") for s in (1, 2)]
    root = write_sweep(tmp_path / "s", cells)
    for c in cells:
        wrong = {0} if c["meta"]["strategy"] == "setfit" else runner_wrong
        (root / c["meta"]["id"] / "dev_predictions.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in dev_outputs(32, wrong, c["meta"]["seed"])))
    _, rec = recommendation(root)
    flagged = [w for w in rec.warnings if "does not separate" in w]
    assert rec.best.strategy == "setfit"
    if warned:
        assert flagged and "setfit (dev 96.9) from pet (dev 93.8): over the 64 dev examples" in flagged[0]
        assert "exact McNemar p = " in flagged[0]
    else:
        assert flagged == []


@pytest.mark.parametrize("method, kept, expected", [
    ("lora", True, "To use it: `tunelab predict {cell} --data FILE` labels new text (seed 2, the best of its seeds on dev)"),
    ("lora", False, "`tunelab run {cell}/config.yaml --out MODEL_DIR` runs it again with the same data, seed and "
                    "settings (seed 2, the best of its seeds on dev)"),
    ("ensemble", False, "`tunelab compare EXPERIMENT.yaml sweep.save_artifacts=true --out NEW_DIR` (this sweep's "
                        "experiment file), then `tunelab predict NEW_DIR/lora-k16-seed2 --data FILE`"),
], ids=["weights kept", "no weights", "no weights, reads other cells"])
def test_the_recommendation_ends_with_the_command_that_uses_the_pick(tmp_path, method, kept, expected):
    from tunelab.report.recommend import recommendation_lines

    cells = [cell("lora", seed, predictions(flips(20, {seed})), dev=dev) for seed, dev in ((1, 0.7), (2, 0.9), (3, 0.8))]
    for c in cells:
        c["meta"]["method"] = method
    root = write_sweep(tmp_path / "s", cells)
    if not kept:
        for seed in (1, 2, 3):
            (root / f"lora-k16-seed{seed}" / "NO_ARTIFACT").write_text("sweep.save_artifacts was false\n")
    _, rec = recommendation(root)
    assert recommendation_lines(rec)[-1].startswith("To use it:")
    assert expected.format(cell=root / "lora-k16-seed2") in recommendation_lines(rec)[-1]


@pytest.mark.parametrize("wrong, warned", [(set(range(0, 60, 2)), True), (set(range(0, 60, 10)), False)],
                         ids=["at the level of one label every time", "well above it"])
def test_a_pick_not_shown_better_than_a_constant_answer_is_warned(tmp_path, wrong, warned):
    from tunelab.report.recommend import recommendation_lines

    labels = ["positive"] * 33 + ["negative"] * 27  # always 'positive' is right on 55%
    rows = predictions(flips(60, wrong), labels)    # 50% right, or 90%
    cells = [cell("lora", seed, rows, dev=0.8) for seed in (1, 2)]
    _, rec = recommendation(write_sweep(tmp_path / "s", cells))
    text = "\n".join(recommendation_lines(rec))
    assert ("not shown better than answering 'positive' every time, which is right on 55.0%" in text) is warned
    if warned:
        assert "(its 50.0%; exact McNemar p = " in text  # both seeds alike: 0/1 per example
