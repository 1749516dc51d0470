"""Read a sweep directory back: the plan (`sweep.json`), finished cells, failures, pending cells.

Only stored files are read (no model is loaded), so a report can be rebuilt anywhere, any time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.errors import UserError

SWEEP_FILE = "sweep.json"
CELL_FILE, METRICS_FILE, COSTS_FILE, PREDICTIONS_FILE = "cell.json", "metrics.json", "costs.json", "predictions.jsonl"
DEV_PREDICTIONS_FILE = "dev_predictions.jsonl"
"""A cell's label scores on its K-shot dev split(s), as sweep/cell.py writes them (classification-type tasks)."""


@dataclass
class CellResult:
    meta: dict
    """id, group, strategy, method, family, k_shot, seed, variant, search (and config in cell.json)."""
    test: dict
    dev: dict
    costs: dict
    num_test: int
    directory: Path
    perturbed: dict = field(default_factory=dict)
    """Test metrics on the perturbed copy of the test split; empty for cells run without it."""

    def predictions(self) -> list[dict]:
        path = self.directory / PREDICTIONS_FILE
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def dev_predictions(self) -> list[dict] | None:
        """The cell's stored dev outputs; None when it kept none (older cells, other tasks) or they are unreadable."""
        try:
            text = (self.directory / DEV_PREDICTIONS_FILE).read_text(encoding="utf-8")
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except (OSError, ValueError):
            return None


@dataclass
class SweepResults:
    root: Path
    name: str
    metric: str
    """The main metric: it ranks, picks hyper-parameters and is A/B-tested."""
    metrics: list[str]
    config: dict
    """The resolved experiment configuration, sweep section included."""
    isolation: str
    cells: list[CellResult] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    pending: list[dict] = field(default_factory=list)
    planned: int = 0


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {path}: {err}") from None


def find_sweeps(path: Path) -> list[Path]:
    """`path` itself when it is a sweep directory, else the sweep directories directly inside it."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path} is not a directory")
    if (path / SWEEP_FILE).is_file():
        return [path]
    found = sorted(p for p in path.iterdir() if (p / SWEEP_FILE).is_file())
    if not found:
        raise UserError(f"{path} holds no sweep ({SWEEP_FILE} not found); run `tunelab compare EXPERIMENT.yaml` first")
    return found


def load_results(root: Path) -> SweepResults:
    root = Path(root)
    plan = read_json(root / SWEEP_FILE)
    results = SweepResults(
        root=root, name=plan["name"], metric=plan["metric"], metrics=plan["metrics"],
        config=plan.get("config", {}), isolation=plan.get("isolation", "process"), planned=len(plan["cells"]),
    )
    for meta in plan["cells"]:
        directory = root / meta["id"]
        failed = root / f"{meta['id']}.failed.json"
        if (directory / METRICS_FILE).is_file() and (directory / CELL_FILE).is_file():
            results.cells.append(load_cell(directory))
        elif failed.is_file():
            results.failures.append(read_json(failed))
        else:
            results.pending.append(meta)
    if results.cells and results.metric not in results.cells[0].test:
        # e.g. metrics: [per_class_f1] stores f1_<label> keys: rank by the first stored scalar instead
        results.metric = next(k for k, v in results.cells[0].test.items() if isinstance(v, (int, float)))
    return results


def load_cell(directory: Path) -> CellResult:
    meta = read_json(directory / CELL_FILE)
    metrics = read_json(directory / METRICS_FILE)
    costs = read_json(directory / COSTS_FILE) if (directory / COSTS_FILE).is_file() else {}
    return CellResult(meta, metrics.get("test", {}), metrics.get("dev") or costs.get("best_dev") or {}, costs,
                      metrics.get("num_test", 0), directory, metrics.get("perturbed") or {})
