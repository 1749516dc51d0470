"""Benchmark: examples/lmbff_sst2.yaml one cell at a time against `sweep.workers` cells at once, same machine.

Every strategy entry of the reference file (MiniLM fine-tuning, SmolLM2 prompting and pet, setfit, the
ensemble) for the chosen seeds on the first `--max-test` test sentences, run as one `tunelab compare` with
`sweep.workers=1` (each cell gets torch's default threads: every core) and then with `sweep.workers=N`
(N cells at once, cores // N threads each), into temporary directories, timed from outside. Figures: the
wall seconds of each sweep and their ratio, and per cell its test accuracy both ways and the share of
test predictions that agree (a different thread count sums floats in another order; a near tie may flip).
Prints a table; writes bench/results/local_workers.json.

    .venv/bin/python bench/local_workers.py                   # seed 13, 300 test sentences, ~20 min on 2 cores
    .venv/bin/python bench/local_workers.py --seeds 13 21 --max-test 0

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


def sub_experiment(datasets: Path, seeds: list[int], directory: Path) -> Path:
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    raw["data"].update(train=str(datasets / "sst2" / "train.jsonl"), test=str(datasets / "sst2" / "test.jsonl"))
    raw["sweep"]["seeds"] = seeds
    path = directory / "reference.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def cells(out: Path) -> dict[str, dict]:
    """cell id -> its test accuracy, torch threads and predicted labels."""
    found = {}
    for metrics_file in sorted(out.glob("*/metrics.json")):
        directory = metrics_file.parent
        costs = json.loads((directory / "costs.json").read_text(encoding="utf-8"))
        lines = (directory / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
        found[directory.name] = {"accuracy": json.loads(metrics_file.read_text(encoding="utf-8"))["test"]["accuracy"],
                                 "torch_threads": costs.get("torch_threads"),
                                 "labels": [json.loads(line).get("prediction") for line in lines]}
    return found


def agreement(one: list, other: list) -> float:
    return sum(a == b for a, b in zip(one, other)) / max(len(one), 1) if len(one) == len(other) else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[13])
    parser.add_argument("--max-test", type=int, default=300, help="test sentences (0: the whole split)")
    parser.add_argument("--workers", type=int, default=2, help="cells at once in the second sweep")
    args = parser.parse_args()
    require_sst2(args.datasets)
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-") as tmp:
        tmp = Path(tmp)
        experiment = sub_experiment(args.datasets, args.seeds, tmp)
        seconds, runs = {}, {}
        for workers in (1, args.workers):
            seconds[workers] = timed_compare(experiment, tmp / f"workers{workers}",
                                             [f"sweep.workers={workers}", *max_test_override(args.max_test)])
            runs[workers] = cells(tmp / f"workers{workers}")
    one, many = runs[1], runs[args.workers]
    print(f"{'cell':44} {'acc, 1 at once':>15} {f'acc, {args.workers} at once':>15} {'agree':>7}")
    rows = {}
    for cell in one:
        other = many.get(cell, {"accuracy": float("nan"), "labels": [], "torch_threads": None})
        rows[cell] = {"accuracy_1": one[cell]["accuracy"], f"accuracy_{args.workers}": other["accuracy"],
                      "agreement": agreement(one[cell]["labels"], other["labels"]),
                      "torch_threads": [one[cell]["torch_threads"], other["torch_threads"]]}
        print(f"{cell:44} {rows[cell]['accuracy_1']:15.4f} {other['accuracy']:15.4f} {rows[cell]['agreement']:7.3f}")
    ratio = seconds[1] / seconds[args.workers]
    print(f"sweep wall: 1 at once {seconds[1]:.0f} s, {args.workers} at once {seconds[args.workers]:.0f} s: x{ratio:.2f}")
    result = {"seeds": args.seeds, "max_test": args.max_test or "all", "workers": args.workers,
              "wall_seconds": {str(k): v for k, v in seconds.items()}, "ratio": ratio, "cells": rows,
              "cpus": len(os.sched_getaffinity(0))}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "local_workers.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
