"""No strategy, search or recommendation reads a test label before the final evaluation.

One small `compare` on tiny random models runs twice: once with the real test labels, once with
every test label flipped. Everything chosen before the final evaluation — the K-shot draws, the
label words, the generated and chosen templates, the pooling and learning rate picked by the
sweep's search, every dev score, the report's dev-based choices and the recommendation's
best-on-dev row — must come out identical; only the test metrics may move (and must, or the
scramble proved nothing).
"""

from __future__ import annotations

import json

import yaml

from conftest import experiment_yaml, write_jsonl
from test_prompt_strategies import NEG, POS, tiny_lm_dir  # noqa: F401
from tunelab.config import load_experiment
from tunelab.report.leaderboard import build_leaderboard
from tunelab.report.recommend import recommend, row_examples
from tunelab.report.results import load_results
from tunelab.sweep import run_sweep

TIMING = ("runtime", "per_second")
PROMPT = {"verbalizer": {"negative": "bad", "positive": "good"}, "use_chat_template": False}
WORDS = {"candidates": ["bad", "good", "dull", "fine"], "dev_top_n": 2}


def strategies(llama) -> list[dict]:
    on_llama = {"model": {"name": str(llama), "max_length": 64}}
    return [
        {"name": "head", "search": {"model.pooling": ["cls", "mean"]}},
        {"name": "lora", "settings": {"r": 2}, "search": {"train.learning_rate": [1e-3, 1e-1]}},
        {"name": "zero_shot", **on_llama, "settings": {"search_label_words": WORDS,
                                                       "generate_templates": {"top_n": 1, "max_tokens": 2, "beam": 2}}},
        {"name": "few_shot", **on_llama, "settings": {"k": 1, "templates": ["{{ text }} It was", "Review: {{ text }}\nSentiment:"]}},
        {"name": "pet", **on_llama, "settings": {"search_label_words": WORDS,
                                                 "generate_templates": {"top_n": 1, "max_tokens": 2, "beam": 2}}},
        {"name": "ensemble", "settings": {"members": ["few_shot", "pet"]}},
    ]


def write_data(directory, flip_test: bool) -> dict:
    pool = [{"text": t, "label": "positive"} for t in POS] + [{"text": t, "label": "negative"} for t in NEG]
    test = [{"text": a + " " + b, "label": y} for (a, y), b in zip([(p, "positive") for p in POS] + [(n, "negative") for n in NEG],
                                                                  reversed(POS + NEG))]
    if flip_test:
        test = [dict(row, label={"positive": "negative", "negative": "positive"}[row["label"]]) for row in test]
    directory.mkdir()
    return {"train": str(write_jsonl(directory / "train.jsonl", pool)), "test": str(write_jsonl(directory / "test.jsonl", test))}


def run_compare(tmp_path, bert_dir, llama, flip_test: bool):
    name = "flipped" if flip_test else "real"
    data = write_data(tmp_path / f"data-{name}", flip_test)
    path = experiment_yaml(tmp_path / f"{name}.yaml", bert_dir, data, {"name": "head"}, prompt=PROMPT)
    raw = yaml.safe_load(path.read_text())
    raw["train"].update(epochs=1, log_to=[])
    raw["output_dir"] = str(tmp_path / f"runs-{name}")
    raw["sweep"] = {"isolation": "none", "k_shot": [3], "seeds": [1, 2], "save_artifacts": False,
                    "strategies": strategies(llama)}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    outcome = run_sweep(load_experiment(path))
    assert outcome.failed == []
    return decisions(outcome.root)


def decisions(root):
    """The report's dev-based choices (search combination per row, best on dev per K) without its plots."""
    results = load_results(root)
    rows, _ = build_leaderboard(results)
    recommendations = recommend(rows, results.metric, {row.group: row_examples(row) for row in rows})
    return results, rows, recommendations


def read(path):
    return json.loads(path.read_text()) if path.is_file() else None


def choices_before_test(results, rows, recommendations) -> dict:
    """Everything decided from train and dev, per cell and per report row (timing keys dropped)."""
    cells = {}
    for cell in results.cells:
        directory = cell.directory
        cells[cell.meta["id"]] = {
            "search": cell.meta.get("search"),
            "dev": {k: v for k, v in cell.dev.items() if not any(t in k for t in TIMING)},
            "pooling": cell.costs.get("pooling"),
            "prompt_search": read(directory / "prompt_search.json"),
            "prompt": read(directory / "prompt.json"),
        }
    chosen = {row.group: {"search": row.search, "dev": row.dev} for row in rows}
    best = {str(r.k_shot): r.best.group if r.best else None for r in recommendations}
    return {"cells": cells, "rows": chosen, "best_on_dev": best}


def test_scrambled_test_labels_change_no_choice(tmp_path, tiny_bert_dir, tiny_lm_dir):
    real = run_compare(tmp_path, tiny_bert_dir, tiny_lm_dir, flip_test=False)
    flipped = run_compare(tmp_path, tiny_bert_dir, tiny_lm_dir, flip_test=True)
    before_real, before_flipped = choices_before_test(*real), choices_before_test(*flipped)
    assert before_real["cells"].keys() == before_flipped["cells"].keys()
    for cell_id in before_real["cells"]:
        assert before_real["cells"][cell_id] == before_flipped["cells"][cell_id], cell_id
    assert before_real["rows"] == before_flipped["rows"]
    assert before_real["best_on_dev"] == before_flipped["best_on_dev"]
    # what the test covers: every strategy ran, each search left its record
    cells = before_real["cells"]
    assert {c.split("-")[0] for c in cells} == {"head", "lora", "zero_shot", "few_shot", "pet", "ensemble"}
    pooled = [c for i, c in cells.items() if i.startswith("head")]
    assert {c["search"]["model.pooling"] for c in pooled} == {"cls", "mean"}
    assert all(c["pooling"] == c["search"]["model.pooling"] for c in pooled)
    assert {c["search"]["train.learning_rate"] for i, c in cells.items() if i.startswith("lora")} == {1e-3, 1e-1}
    searched = [c for i, c in cells.items() if i.startswith(("zero_shot", "pet", "few_shot"))]
    assert searched and all(c["prompt_search"] for c in searched)
    assert all(c["prompt_search"].get("generated_templates") for i, c in cells.items() if i.startswith(("zero_shot", "pet")))
    # ... and the scramble reached the final evaluation: accuracy on flipped labels is 1 - accuracy
    for cell in real[0].cells:
        other = next(c for c in flipped[0].cells if c.meta["id"] == cell.meta["id"])
        assert abs(cell.test["accuracy"] + other.test["accuracy"] - 1.0) < 1e-9
