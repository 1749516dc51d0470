"""Benchmark: the prompting cells of examples/lmbff_sst2.yaml with and without the sweep's score cache.

`zero_shot` (two prompt variants), `zero_shot_calibrated` (the same two, calibrated) and
`prompt_ensemble` (three templates, the first the base prompt) run on SmolLM2-135M, as the reference
file runs them: once with `sweep.reuse_scores: false` (every cell computes its own scores) and once
with the default (a cell reads scores another cell computed; `tunelab.prompts.score_cache`). Each
way is one `tunelab compare` into its own temporary directory, one after the other on the same
machine, timed from outside. Figures: wall seconds of each sweep and their ratio, per-cell eval
seconds as `costs.json` charges them, and whether every prediction is identical both ways.
Prints a table; writes bench/results/score_cache.json.

    .venv/bin/python bench/score_cache.py                  # the first 600 test sentences, ~8 min on 2 cores
    .venv/bin/python bench/score_cache.py --max-test 0     # the whole test split (1,821), ~20 min

Needs SST-2 from `--datasets` (default: $TUNELAB_DATASETS or ../shared/datasets); exits with a
message when it is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import yaml
from timed_sweep import max_test_override, require_sst2, timed_compare  # bench/ is on sys.path when a script here runs

HERE = Path(__file__).resolve().parent
DEFAULT_DATASETS = Path(os.environ.get("TUNELAB_DATASETS", HERE.parents[1] / "shared" / "datasets"))
EXAMPLE = HERE.parent / "examples" / "lmbff_sst2.yaml"
PROMPTING = ("zero_shot", "zero_shot_calibrated", "prompt_ensemble")


def sub_experiment(datasets: Path, reuse: bool, directory: Path) -> Path:
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    raw["data"].update(train=str(datasets / "sst2" / "train.jsonl"), test=str(datasets / "sst2" / "test.jsonl"))
    raw["sweep"]["strategies"] = [s for s in raw["sweep"]["strategies"] if s.get("id", s["name"]) in PROMPTING]
    raw["sweep"]["reuse_scores"] = reuse
    path = directory / f"prompting-{'reuse' if reuse else 'plain'}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def cells(out: Path) -> dict[str, dict]:
    """cell id -> its eval seconds (as charged), reused seconds and predictions."""
    found = {}
    for costs_file in sorted(out.glob("*/costs.json")):
        costs = json.loads(costs_file.read_text(encoding="utf-8"))
        predictions = (costs_file.parent / "predictions.jsonl").read_text(encoding="utf-8")
        found[costs_file.parent.name] = {"eval_seconds": costs["eval_seconds"],
                                        "eval_seconds_reused": costs.get("eval_seconds_reused", 0.0),
                                        "predictions": predictions}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--max-test", type=int, default=600, help="test sentences (0: the whole split)")
    args = parser.parse_args()
    require_sst2(args.datasets)
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-") as tmp:
        tmp = Path(tmp)
        seconds, runs = {}, {}
        for reuse in (False, True):
            name = "reuse" if reuse else "plain"
            experiment = sub_experiment(args.datasets, reuse, tmp)
            seconds[name] = timed_compare(experiment, tmp / name, max_test_override(args.max_test))
            runs[name] = cells(tmp / name)
    identical = runs["plain"].keys() == runs["reuse"].keys() and all(
        runs["plain"][c]["predictions"] == runs["reuse"][c]["predictions"] for c in runs["plain"])
    print(f"{'cell':44} {'eval s, plain':>14} {'eval s, reuse':>14} {'of which read':>14}")
    for cell in runs["plain"]:
        plain, reuse = runs["plain"][cell], runs["reuse"].get(cell, {})
        print(f"{cell:44} {plain['eval_seconds']:14.1f} {reuse.get('eval_seconds', float('nan')):14.1f} "
              f"{reuse.get('eval_seconds_reused', 0.0):14.1f}")
    ratio = seconds["plain"] / seconds["reuse"]
    print(f"sweep wall: plain {seconds['plain']:.0f} s, reuse {seconds['reuse']:.0f} s: x{ratio:.2f}; "
          f"predictions identical: {identical}")
    result = {"max_test": args.max_test or "all", "wall_seconds": seconds, "ratio": ratio, "predictions_identical": identical,
              "cells": {c: {k: v for k, v in run.items() if k != "predictions"} for c, run in runs["reuse"].items()},
              "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"), "cpus": os.cpu_count()}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "score_cache.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
