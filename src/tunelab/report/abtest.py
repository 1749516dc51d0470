"""Prompt A/B tests: cells that differ only in their prompt variant, scored on the same examples.

For each strategy, K, search combination and pair of variants (A, B), the seeds where both
variants finished are pooled (each example is paired with itself under the other variant, within
its seed). Exact McNemar on the discordant pairs gives p; a paired bootstrap over the pooled
examples gives a 95% interval of metric(A) − metric(B). A winner is named only when p < 0.05.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from tunelab.report.results import CellResult
from tunelab.stats import mcnemar_exact, paired_bootstrap

ALPHA = 0.05


@dataclass
class ABResult:
    strategy: str
    k_shot: int | None
    search: dict
    a: str
    b: str
    seeds: list[int]
    n: int
    """Paired examples (pooled over seeds)."""
    metric: str
    score_a: float
    score_b: float
    diff: float
    low: float
    high: float
    only_a: int
    """Examples A got right and B wrong."""
    only_b: int
    p_value: float
    skipped: str = ""
    """Why no test was run (e.g. the variants scored different examples)."""

    @property
    def winner(self) -> str | None:
        if self.skipped or self.p_value >= ALPHA:
            return None
        return self.a if self.only_a > self.only_b else self.b


def reference(row: dict) -> str:
    """The gold answer of a stored prediction row: its label, or its target text (generation)."""
    return row["label"] if "label" in row else row.get("target")


def example_key(row: dict) -> str:
    """What identifies an example: its fields other than the outputs."""
    return json.dumps({k: v for k, v in row.items() if k not in ("prediction", "scores", "generation", "outputs")},
                      sort_keys=True, default=str)


def prompt_ab_tests(cells: list[CellResult], metric: str, n_resamples: int = 2000) -> list[ABResult]:
    by_setting: dict = defaultdict(lambda: defaultdict(dict))  # (strategy, K, combo) → seed → variant → cell
    for cell in cells:
        if cell.meta.get("variant"):
            key = (cell.meta["strategy"], cell.meta["k_shot"], json.dumps(cell.meta.get("search") or {}, sort_keys=True))
            by_setting[key][cell.meta["seed"]][cell.meta["variant"]] = cell
    results = []
    for (strategy, k, combo), seeds in by_setting.items():
        variants = sorted({v for per_seed in seeds.values() for v in per_seed})
        for a, b in itertools.combinations(variants, 2):
            pairs = [(seed, cs[a], cs[b]) for seed, cs in sorted(seeds.items()) if a in cs and b in cs]
            if pairs:
                results.append(compare(strategy, k, json.loads(combo), a, b, pairs, metric, n_resamples))
    return results


def compare(strategy, k, search, a, b, pairs, metric: str, n_resamples: int) -> ABResult:
    preds_a, preds_b, refs = [], [], []
    for seed, cell_a, cell_b in pairs:
        rows_a, rows_b = cell_a.predictions(), cell_b.predictions()
        if [example_key(r) for r in rows_a] != [example_key(r) for r in rows_b]:
            return skipped(strategy, k, search, a, b, pairs, metric, f"seed {seed}: the variants scored different examples")
        preds_a += [str(r.get("prediction")) for r in rows_a]
        preds_b += [str(r.get("prediction")) for r in rows_b]
        refs += [str(reference(r)) for r in rows_a]
    correct_a = np.array([p == r for p, r in zip(preds_a, refs)])
    correct_b = np.array([p == r for p, r in zip(preds_b, refs)])
    test = mcnemar_exact(correct_a.tolist(), correct_b.tolist())
    if not registered(metric):
        metric = "accuracy"  # a flattened key such as f1_<label>: test the accuracy difference instead
    if metric == "accuracy":
        boot = paired_bootstrap(correct_a.astype(float), correct_b.astype(float), n_resamples=n_resamples)
    else:
        # Records are indices into A's predictions (0..n-1) and B's (n..2n-1): the bootstrap resamples
        # example indices jointly, and the metric looks the strings up.
        n = len(refs)
        predictions, references = preds_a + preds_b, refs + refs
        def fn(index: np.ndarray) -> float:
            return metric_value(metric, [predictions[i] for i in index], [references[i] for i in index])
        boot = paired_bootstrap(np.arange(n), np.arange(n, 2 * n), metric_fn=fn, n_resamples=min(n_resamples, 1000))
    return ABResult(
        strategy, k, search, a, b, [p[0] for p in pairs], len(refs), metric,
        score_a=metric_value(metric, preds_a, refs), score_b=metric_value(metric, preds_b, refs),
        diff=boot.diff, low=boot.low, high=boot.high, only_a=test.b, only_b=test.c, p_value=test.p_value,
    )


def registered(metric: str) -> bool:
    from tunelab.metrics import available_metrics

    return metric in available_metrics()


def metric_value(metric: str, predictions: list[str], references: list[str]) -> float:
    from tunelab.metrics import compute_metrics

    return compute_metrics([metric], predictions, references)[metric]


def skipped(strategy, k, search, a, b, pairs, metric, why: str) -> ABResult:
    nan = float("nan")
    return ABResult(strategy, k, search, a, b, [p[0] for p in pairs], 0, metric, nan, nan, nan, nan, nan, 0, 0, 1.0, why)
