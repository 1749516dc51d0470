"""The dev search's choices in the report: pooling chosen by a sweep's `search:`, prompt candidates with dev scores."""

from __future__ import annotations

import yaml

from conftest import experiment_yaml
from test_no_test_labels import PROMPT, WORDS, write_data
from test_prompt_strategies import tiny_lm_dir  # noqa: F401
from tunelab.config import load_experiment
from tunelab.report import build_report
from tunelab.sweep import run_sweep


def test_pooling_and_prompt_search_are_chosen_on_dev_and_reported(tmp_path, tiny_bert_dir, tiny_lm_dir):
    data = write_data(tmp_path / "data", flip_test=False)
    path = experiment_yaml(tmp_path / "exp.yaml", tiny_bert_dir, data, {"name": "head"}, prompt=PROMPT)
    raw = yaml.safe_load(path.read_text())
    raw["train"].update(epochs=1, log_to=[])
    raw["output_dir"] = str(tmp_path / "runs")
    raw["sweep"] = {"isolation": "none", "k_shot": [3], "seeds": [1], "save_artifacts": False, "strategies": [
        {"name": "full", "search": {"model.pooling": ["cls", "mean"]}},
        {"name": "zero_shot", "model": {"name": str(tiny_lm_dir), "max_length": 64},
         "settings": {"search_label_words": WORDS, "generate_templates": {"top_n": 2, "max_tokens": 2, "beam": 2}}},
    ]}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    outcome = run_sweep(load_experiment(path))
    assert outcome.failed == [] and outcome.ran == 3
    report = build_report(outcome.root)
    row = next(r for r in report.rows if r.strategy == "full")
    cells = [c for c in report.results.cells if c.meta["strategy"] == "full"]
    best = max(cells, key=lambda c: c.dev["accuracy"])  # ties keep the first (cls), as the leaderboard does
    assert row.search == best.meta["search"] and {c.costs["pooling"] for c in cells} == {"cls", "mean"}
    md = report.markdown.read_text()
    chosen = md.split("## Chosen hyper-parameters")[1].split("## ")[0]
    pooling = row.search["model.pooling"]
    assert f"({pooling} pooling)" in chosen and f"model.pooling={pooling}" in chosen
    search = md.split("## Prompt search")[1].split("## ")[0]
    zero = next(c for c in report.results.cells if c.meta["strategy"] == "zero_shot")
    import json

    record = json.loads((zero.directory / "prompt_search.json").read_text())
    tried = sum(len(t["label_words"]["verbalizers"]) for t in record["trials"])
    assert search.count("| zero_shot-k3 seed 1 |") == tried == 2 * len(record["trials"]) >= 4
    assert search.count("chosen") == 1 and "the LM wrote" in search
