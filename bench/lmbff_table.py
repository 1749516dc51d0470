"""Benchmark: the LM-BFF table — tunelab's dev-chosen best strategy per task beside LM-BFF's published row.

For each experiment file (default: the four tasks' files under examples/, the `_mpnet` version where
`make mpnet` has run), it reads the finished sweep (`runs/<name>`, or `--runs-root/<name>`), takes the
report's own recommendation (the row best on the mean K-shot dev metric; test never chooses) and writes
per task: that row's test accuracy mean ± std over seeds, every row's, the target of issue 14 and
whether it is met.

    .venv/bin/python bench/lmbff_table.py                       # the table from finished sweeps
    .venv/bin/python bench/lmbff_table.py --run                 # run (or resume) each sweep first: hours on 2 cores
    .venv/bin/python bench/lmbff_table.py examples/lmbff_mr.yaml --runs-root /data/runs

Writes bench/results/lmbff_table.json. A sweep not found (or with no finished cell) is listed as missing.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
# task → (LM-BFF prompt-based fine-tuning on RoBERTa-large, mean ± std; issue 14's target for tunelab's best)
PUBLISHED = {"sst2": ((92.7, 0.9), 90.0), "mr": ((87.0, 1.2), 84.0), "subj": ((91.2, 1.1), 88.0), "mpqa": ((84.7, 2.2), 81.0)}


def default_files() -> list[Path]:
    from tunelab.models import require_mpnet
    from tunelab.errors import UserError

    try:
        require_mpnet()
        mpnet = True
    except UserError:
        mpnet = False
    files = []
    for task in PUBLISHED:
        with_mpnet = ROOT / "examples" / f"lmbff_{task}_mpnet.yaml"
        files.append(with_mpnet if mpnet and with_mpnet.is_file() else ROOT / "examples" / f"lmbff_{task}.yaml")
    return files


def task_of(path: Path) -> str | None:
    stem = path.stem.removeprefix("lmbff_").removesuffix("_mpnet")
    return stem if stem in PUBLISHED else None


def sweep_dir(path: Path, runs_root: Path | None) -> Path:
    from tunelab.config import load_experiment

    config = load_experiment(path)
    return (runs_root / config.name) if runs_root else Path(config.output_dir) / config.name


def percent(values: list[float]) -> dict:
    from tunelab.stats import mean_std

    mean, std = mean_std(values)
    return {"mean": round(100 * mean, 2), "std": round(100 * std, 2), "seeds": len(values)}


def table_entry(path: Path, root: Path) -> dict:
    from tunelab.report.dev_selection import selection_gain
    from tunelab.report.leaderboard import build_leaderboard, row_label
    from tunelab.report.recommend import recommend, row_examples
    from tunelab.report.results import load_results

    task = task_of(path)
    entry = {"file": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path), "sweep": str(root)}
    if task:
        (published, std), target = PUBLISHED[task]
        entry.update(task=task, lmbff={"mean": published, "std": std}, target=target)
    if not (root / "sweep.json").is_file():
        return dict(entry, missing="no finished sweep here (run with --run, or give --runs-root)")
    results = load_results(root)
    rows, _ = build_leaderboard(results)
    recs = recommend(rows, results.metric, {row.group: row_examples(row) for row in rows})
    rec = next((r for r in recs if r.best is not None), None)
    if rec is None:
        return dict(entry, missing="no finished cell")
    # dev_kept_checkpoint: the row's dev score is that of epochs chosen on the same dev split (cells finished before
    # the held-out dev score), not comparable with the held-out rows beside it
    entry["rows"] = [{"row": row_label(row), "model": row.model, "dev": round(100 * sum(row.dev) / len(row.dev), 2)
                      if row.dev else None, "dev_kept_checkpoint": selection_gain(row, results.metric) is not None,
                      "test": percent(row.values[results.metric]), "verdict": row.verdict}
                     for row in rows if row.values.get(results.metric)]
    best = next(r for r in entry["rows"] if r["row"] == row_label(rec.best))
    entry["best_on_dev"] = best
    if task:
        entry["target_met"] = best["test"]["mean"] >= entry["target"]
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="experiment files (default: the four LM-BFF tasks)")
    parser.add_argument("--runs-root", type=Path, help="the folder holding the sweeps (default: each file's output_dir)")
    parser.add_argument("--run", action="store_true", help="run or resume each sweep first (tunelab compare)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "lmbff_table.json")
    args = parser.parse_args(argv)
    files = [f.resolve() for f in args.files] or default_files()
    table = []
    for path in files:
        root = sweep_dir(path, args.runs_root)
        if args.run:
            subprocess.run([str(BIN / "tunelab"), "compare", str(path), "--out", str(root)], check=False)
        table.append(table_entry(path, root))
    for entry in table:
        if "missing" in entry:
            print(f"{entry['file']}: {entry['missing']} ({entry['sweep']})")
            continue
        best = entry["best_on_dev"]
        goal = f"  target ≥ {entry['target']}: {'met' if entry['target_met'] else 'not met'}" if "target" in entry else ""
        print(f"{entry.get('task', entry['file'])}: best on dev {best['row']} ({best['model']}) "
              f"{best['test']['mean']:.1f} ± {best['test']['std']:.1f} over {best['test']['seeds']} seed(s){goal}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"written": datetime.now().isoformat(timespec="seconds"),
                                    "machine": platform.platform(), "tasks": table}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
