"""Prompt A/B tests: cells that differ only in their prompt variant, scored on the same examples.

For each strategy, K, search combination and pair of variants (A, B), over the seeds where both
finished, each test example is one paired unit (seeds are repeated measurements of it; pooling
them as extra examples would count an example several times — fully so for a deterministic
zero-shot prompt). Per example, the share of seeds each variant got right; A is better on the
example when its share is higher. p: with one seed per side, the exact McNemar test; with several, a
paired t-test on the per-example differences of those shares (`stats.paired_correctness_test`: a sign
test over them would ignore by how much a side is better). Interval: paired bootstrap over examples of
metric(A) − metric(B), each averaged over seeds. A winner is named only when p < 0.05.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from tunelab.report.results import CellResult
from tunelab.stats import paired_bootstrap, paired_correctness_test

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
    """Paired test examples."""
    metric: str
    score_a: float
    score_b: float
    diff: float
    low: float
    high: float
    only_a: int
    """Examples A got right in more seeds than B (with one seed: A right, B wrong)."""
    only_b: int
    p_value: float
    skipped: str = ""
    """Why no test was run (e.g. the variants scored different examples)."""
    test: str = "exact McNemar"
    """The test that gave p_value: "exact McNemar" (one seed per side) or "paired t-test"."""
    right_diff: float = 0.0
    """Mean over examples of (A's share of right seeds − B's): the side the test favours."""

    @property
    def winner(self) -> str | None:
        if self.skipped or self.p_value >= ALPHA:
            return None
        return self.a if self.right_diff > 0 else self.b


def reference(row: dict) -> str | list[str]:
    """The gold answer of a stored prediction row: its label, its target text (generation), or the list of
    every gold answer (extractive QA: `answer_texts`)."""
    if isinstance(row.get("answer_texts"), list):
        return row["answer_texts"]
    return str(row["label"] if "label" in row else row.get("target"))


def is_right(prediction: str, gold: str | list[str]) -> bool:
    """The same string; against a list of gold answers (extractive QA), SQuAD's normalised exact match with one."""
    if isinstance(gold, list):
        from tunelab.metrics_qa import best_over_references, exact_score

        return best_over_references(exact_score, prediction, gold) == 1.0
    return prediction == gold


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
    """The test example is the unit: seeds are repeated measurements of it, never extra examples."""
    preds_a, preds_b, keys = [], [], None  # per seed: the n predictions of A and of B
    for seed, cell_a, cell_b in pairs:
        rows_a, rows_b = cell_a.predictions(), cell_b.predictions()
        seed_keys = [example_key(r) for r in rows_a]
        if seed_keys != [example_key(r) for r in rows_b] or (keys is not None and seed_keys != keys):
            return skipped(strategy, k, search, a, b, pairs, metric, f"seed {seed}: the variants scored different examples")
        keys, refs = seed_keys, [reference(r) for r in rows_a]
        preds_a.append([str(r.get("prediction")) for r in rows_a])
        preds_b.append([str(r.get("prediction")) for r in rows_b])
    return paired_test(strategy, k, search, a, b, [p[0] for p in pairs], preds_a, preds_b, refs, metric, n_resamples)


def paired_test(strategy, k, search, a, b, seeds, preds_a, preds_b, refs, metric: str, n_resamples: int) -> ABResult:
    """Paired test and bootstrap of A against B from their per-seed predictions on the same examples.
    A and B may have different numbers of seeds (each side is averaged over its own)."""
    right_a = np.mean([[is_right(p, r) for p, r in zip(row, refs)] for row in preds_a], axis=0)  # (n,) share of seeds right
    right_b = np.mean([[is_right(p, r) for p, r in zip(row, refs)] for row in preds_b], axis=0)
    test = paired_correctness_test(right_a, right_b)
    if not registered(metric):
        metric = "accuracy"  # a flattened key such as f1_<label>: test the accuracy difference instead
    if metric == "accuracy":
        boot = paired_bootstrap(right_a, right_b, n_resamples=n_resamples)
    else:
        boot = paired_bootstrap(np.arange(len(refs)), np.arange(len(refs)) + len(refs),
                                metric_fn=seed_mean_metric(metric, preds_a, preds_b, refs),
                                n_resamples=min(n_resamples, 1000))
    return ABResult(
        strategy, k, search, a, b, seeds, len(refs), metric,
        score_a=seed_mean(metric, preds_a, refs), score_b=seed_mean(metric, preds_b, refs),
        diff=boot.diff, low=boot.low, high=boot.high, only_a=test.better_a, only_b=test.better_b,
        p_value=test.p_value, test=test.test, right_diff=test.mean_diff,
    )


def seed_mean(metric: str, predictions: list[list[str]], references: list[str]) -> float:
    """The metric averaged over seeds, as the leaderboard reports it."""
    return float(np.mean([metric_value(metric, row, references) for row in predictions]))


def seed_mean_metric(metric: str, preds_a, preds_b, refs):
    """metric_fn for the bootstrap: indices < n are A's examples, ≥ n B's; resampled jointly by example."""
    n = len(refs)

    def fn(index: np.ndarray) -> float:
        system, examples = (preds_a, index) if index[0] < n else (preds_b, index - n)
        return seed_mean(metric, [[row[i] for i in examples] for row in system], [refs[i] for i in examples])

    return fn


def registered(metric: str) -> bool:
    from tunelab.metrics import available_metrics

    return metric in available_metrics()


def metric_value(metric: str, predictions: list[str], references: list[str]) -> float:
    from tunelab.metrics import compute_metrics

    return compute_metrics([metric], predictions, references)[metric]


def skipped(strategy, k, search, a, b, pairs, metric, why: str) -> ABResult:
    nan = float("nan")
    return ABResult(strategy, k, search, a, b, [p[0] for p in pairs], 0, metric, nan, nan, nan, nan, nan, 0, 0, 1.0, why)
