"""Benchmark: one sweep on the local executor and on a local Ray cluster of two worker nodes.

The sweep: SST-2 (K=16 per class, `data.max_test` test sentences), the embedded MiniLM, strategies
head / bitfit / lora × K ∈ {8, 16} × 4 seeds = 24 cells, 2 epochs each. It runs
1. on the local executor (`isolation: process`: one cell after another, each in its own process), and
2. on a Ray cluster started here — a head node and a worker node, 1 CPU each, so two cells run at
   once — inside a network namespace with loopback only (Ray's node address stays 127.0.0.1; as
   root: `unshare --net`).
It checks that both sweeps give identical cell results (test metrics and every prediction) and
prints the wall-time ratio local / Ray, measured in this one run.

    .venv/bin/python bench/ray_sweep.py             # ~10 min on 2 idle cores
    .venv/bin/python bench/ray_sweep.py --seeds 2   # 12 cells: quicker, rougher

Writes bench/results/ray_sweep.json. Needs SST-2 from `--datasets` (default: $TUNELAB_DATASETS or
../shared/datasets); exits with a message when it is absent or no namespace can be made.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
DEFAULT_DATASETS = Path(os.environ.get("TUNELAB_DATASETS", HERE.parents[1] / "shared" / "datasets"))
BIN = Path(sys.executable).parent
PORT = 6479

CLUSTER = """\
set -u
trap '"{bin}/ray" stop --force > /dev/null 2>&1' EXIT
ip link set lo up
export RAY_USAGE_STATS_ENABLED=0
"{bin}/ray" start --head --port={port} --num-cpus=1 --include-dashboard=false --temp-dir={tmp} > {tmp}/head.log 2>&1
"{bin}/ray" start --address=127.0.0.1:{port} --num-cpus=1 > {tmp}/worker.log 2>&1
start=$(date +%s.%N)
"{bin}/tunelab" compare {exp} --executor ray --out {root} > {tmp}/sweep.log 2>&1
code=$?
echo "wall $start $(date +%s.%N) exit $code"
"""


def experiment(datasets: Path, seeds: int, max_test: int, folder: Path) -> Path:
    sst2 = datasets / "sst2"
    config = {
        "name": "ray-bench",
        "model": {"name": "minilm-l6", "max_length": 64},
        "task": {"label_names": ["negative", "positive"]},
        "data": {"train": str(sst2 / "train.jsonl"), "test": str(sst2 / "test.jsonl"), "k_shot": 16,
                 "max_test": max_test},
        "train": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "progress_bar": False, "log_to": ["csv"]},
        "metrics": ["accuracy", "f1"],
        "output_dir": str(folder / "runs"),
        "sweep": {"strategies": ["head", "bitfit", {"name": "lora", "train": {"learning_rate": 5e-3}}],
                  "k_shot": [8, 16], "seeds": list(range(1, seeds + 1)), "save_artifacts": False,
                  "ray_address": f"127.0.0.1:{PORT}"},
    }
    path = folder / "ray_bench.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cell_results(root: Path) -> dict:
    results = {}
    for metrics in sorted(root.glob("*/metrics.json")):
        predictions = [json.loads(line)["prediction"] for line in (metrics.parent / "predictions.jsonl").open()]
        results[metrics.parent.name] = {"test": json.loads(metrics.read_text())["test"], "predictions": predictions}
    return results


def run_local(exp: Path, root: Path) -> float:
    started = time.perf_counter()
    subprocess.run([str(BIN / "tunelab"), "compare", str(exp), "--executor", "local", "--out", str(root)],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def run_ray(exp: Path, root: Path) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="tlray-", dir="/tmp"))
    try:
        script = CLUSTER.format(bin=BIN, port=PORT, tmp=tmp, exp=exp, root=root)
        done = subprocess.run(["unshare", "--net", "bash", "-c", script], capture_output=True, text=True)
        line = next((l for l in done.stdout.splitlines() if l.startswith("wall ")), "")
        if not line.endswith("exit 0"):
            sys.exit(f"the Ray sweep failed: {done.stdout[-2000:]}{done.stderr[-2000:]}\n"
                     f"{(tmp / 'sweep.log').read_text(errors='replace')[-3000:]}")
        _, start, end, *_ = line.split()
        return float(end) - float(start)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--max-test", type=int, default=200)
    args = parser.parse_args()
    if not (args.datasets / "sst2" / "train.jsonl").is_file():
        sys.exit(f"SST-2 not found under {args.datasets} (set --datasets or TUNELAB_DATASETS)")
    if subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode:
        sys.exit("cannot make a network namespace here (needs root and util-linux `unshare`)")
    folder = Path(tempfile.mkdtemp(prefix="tunelab-ray-bench-"))
    try:
        exp = experiment(args.datasets, args.seeds, args.max_test, folder)
        local_seconds = run_local(exp, folder / "local")
        ray_seconds = run_ray(exp, folder / "ray")
        local, on_ray = cell_results(folder / "local"), cell_results(folder / "ray")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    identical = local == on_ray
    result = {
        "cells": len(local), "cells_on_ray": len(on_ray), "identical_results": identical,
        "local_seconds": round(local_seconds, 1), "ray_seconds": round(ray_seconds, 1),
        "local_over_ray": round(local_seconds / ray_seconds, 2),
        "setup": "local: one cell at a time, each in its own process; ray: head + worker node, 1 CPU each",
        "cpus": os.cpu_count(), "load_average": os.getloadavg(), "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(f"{len(local)} cells: local {local_seconds:.0f} s, Ray (2 nodes) {ray_seconds:.0f} s, "
          f"ratio {local_seconds / ray_seconds:.2f}; identical results: {identical}")
    out = HERE / "results" / "ray_sweep.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    if not identical:
        sys.exit("the two executors disagree: see the cells above")


if __name__ == "__main__":
    main()
