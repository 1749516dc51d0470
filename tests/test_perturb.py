"""The perturbed copy of the test split: deterministic by seed, different from the original, labels
kept, train and dev untouched; its metrics in metrics.json and as a leaderboard column."""

from __future__ import annotations

import csv
import json

from conftest import experiment_yaml
from test_report import cell, write_sweep
from tunelab.cli import main
from tunelab.data.perturb import perturb_text, perturbed_copy

EXAMPLES = [{"text": f"the film number {i} was a rather good and moving story", "label": "ab"[i % 2], "id": i}
            for i in range(30)] + [{"text": "one", "text_pair": "two words", "label": "a"}, {"text": "", "label": "b"}]


def test_copy_is_deterministic_by_seed_differs_and_keeps_labels():
    original = [dict(e) for e in EXAMPLES]
    first, again, other = perturbed_copy(EXAMPLES, 1), perturbed_copy(EXAMPLES, 1), perturbed_copy(EXAMPLES, 2)
    assert first == again and first != other
    assert EXAMPLES == original  # the input is not touched
    for before, after in zip(EXAMPLES, first):
        assert after["text"] != before["text"]  # every example differs
        assert {k: v for k, v in after.items() if k not in ("text", "text_pair")} == \
               {k: v for k, v in before.items() if k not in ("text", "text_pair")}
    assert first[30]["text_pair"] != "two words"
    # a prefix of the split (data.max_test) gets the same copies
    assert perturbed_copy(EXAMPLES[:5], 1) == first[:5]


def test_edits_are_typos_swaps_and_deletions_at_the_configured_rate():
    import random

    text = " ".join(f"word{i}" for i in range(200))
    out = perturb_text(text, random.Random(0), rate=0.15)
    words, new = text.split(), out.split()
    assert 150 <= len(set(new) & set(words)) <= 195  # most words intact, some edited (15% ± noise)
    assert len(new) < len(words)  # some deleted
    assert any(w not in words for w in new)  # some typos
    assert sorted(new) != new or new != [w for w in words if w in new]  # some swapped or edited


def test_the_same_text_under_two_keys_gets_the_same_edits():
    copy = perturbed_copy([{"text": "a good and long sentence here", "sentence": "a good and long sentence here"}], 3,
                          ("text", "sentence"))[0]
    assert copy["text"] == copy["sentence"] != "a good and long sentence here"


def test_run_writes_perturbed_metrics_and_never_touches_train_or_dev(tmp_path, tiny_bert_dir, tiny_sentiment, monkeypatch):
    import tunelab.run as run

    seen = []
    real = run.perturbed_copy
    monkeypatch.setattr(run, "perturbed_copy", lambda examples, *a: seen.append([e["text"] for e in examples]) or real(examples, *a))
    exp = experiment_yaml(tmp_path / "e.yaml", tiny_bert_dir, tiny_sentiment, {"name": "head"}, train={"epochs": 1})
    assert main(["run", str(exp), "--out", str(tmp_path / "r")]) == 0
    test_texts = [json.loads(line)["text"] for line in open(tiny_sentiment["test"])]
    assert seen == [test_texts]  # only the test split is perturbed
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert set(metrics["perturbed"]) == set(metrics["test"]) == {"accuracy", "f1"}
    costs = json.loads((tmp_path / "r" / "costs.json").read_text())
    assert costs["perturbed_eval_seconds"] > 0
    rows = [json.loads(line) for line in open(tmp_path / "r" / "perturbed_predictions.jsonl")]
    assert [r["label"] for r in rows] == [json.loads(line)["label"] for line in open(tiny_sentiment["test"])]
    assert all(r["text"] != t for r, t in zip(rows, test_texts))

    exp = experiment_yaml(tmp_path / "off.yaml", tiny_bert_dir, {**tiny_sentiment, "perturbed_test": False},
                          {"name": "head"}, train={"epochs": 1})
    assert main(["run", str(exp), "--out", str(tmp_path / "off")]) == 0
    assert "perturbed" not in json.loads((tmp_path / "off" / "metrics.json").read_text())


def _perturbed(c: dict, accuracy: float) -> dict:
    c["perturbed"] = {"accuracy": accuracy, "f1": accuracy}
    return c


def test_leaderboard_shows_perturbed_accuracy_and_a_dash_for_older_cells(tmp_path):
    from rich.console import Console

    from tunelab.report import build_report, terminal_table

    cells = [_perturbed(cell("lora", s, 0.8, params=134_520_000), 0.6 + 0.1 * s) for s in (1, 2)]
    cells += [_perturbed(cell("prompt_tuning", s, 0.7), 0.5) for s in (1, 2)]
    cells += [cell("head", s, 0.6) for s in (1, 2)]  # finished before the perturbed test existed
    root = write_sweep(tmp_path / "sweep", cells)
    for c in cells:
        if "perturbed" in c:
            metrics = json.loads((root / c["meta"]["id"] / "metrics.json").read_text())
            (root / c["meta"]["id"] / "metrics.json").write_text(json.dumps({**metrics, "perturbed": c["perturbed"]}))
    report = build_report(root)
    assert report.metrics == ["accuracy", "perturbed_accuracy", "f1"]
    rows = {r["strategy"]: r for r in csv.DictReader(open(root / "leaderboard.csv"))}
    assert float(rows["lora"]["perturbed_accuracy_mean"]) == 0.75 and rows["head"]["perturbed_accuracy_mean"] == ""
    assert "perturbed_accuracy" in rows["lora"]["best"]
    md = report.markdown.read_text()
    assert "perturbed accuracy (%)" in md and "| **75.0 ± 7.1** |" in md and "perturbed copy of the test split" in md
    head = next(line for line in md.splitlines() if line.startswith("| [head]"))  # the leaderboard's row
    assert head.split("|")[7].strip() == "–"  # strategy, model, family, K, accuracy, its interval, perturbed
    console = Console(width=80, record=True)
    console.print(terminal_table(report))
    lines = console.export_text().splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 80
    assert "75.0±7.1" in next(line for line in lines if line.startswith("lora"))
