"""Significance tests and summaries for comparing two strategies on the same examples.

The comparisons here are *paired*: both systems saw the same test examples, so tests work on
per-example differences (McNemar on discordant pairs, a paired t-test on seed-averaged correctness;
bootstrap resampling example indices jointly) rather than treating the two scores as independent samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from tunelab.errors import DataError

# Resamples evaluated per vectorised chunk: bounds memory at chunk × n values.
_CHUNK = 256


@dataclass(frozen=True)
class McNemarResult:
    """b: A right and B wrong; c: A wrong and B right; p_value: exact two-sided."""

    b: int
    c: int
    p_value: float


@dataclass(frozen=True)
class BootstrapResult:
    """diff = metric(A) − metric(B) on all examples; [low, high] its percentile confidence interval."""

    diff: float
    low: float
    high: float


def _check_paired(a: Sequence, b: Sequence) -> None:
    if len(a) == 0:
        raise DataError("cannot compare two systems on zero examples")
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs equal lengths, got {len(a)} and {len(b)}")


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> McNemarResult:
    """Exact McNemar test: are A and B equally accurate on these paired examples?

    Only discordant pairs carry information. Under H0 each of the n = b + c discordant pairs is
    equally likely to favour A or B, so b ~ Binomial(n, ½) and the two-sided p-value is
    p = min(1, 2 · Σ_{k ≤ min(b, c)} C(n, k) / 2ⁿ); p = 1 when n = 0.
    """
    from scipy.stats import binomtest

    _check_paired(correct_a, correct_b)
    b = sum(1 for x, y in zip(correct_a, correct_b) if x and not y)
    c = sum(1 for x, y in zip(correct_a, correct_b) if y and not x)
    if b + c == 0:
        return McNemarResult(b=0, c=0, p_value=1.0)
    p = binomtest(b, b + c, 0.5, alternative="two-sided").pvalue
    return McNemarResult(b=b, c=c, p_value=float(min(1.0, p)))


@dataclass(frozen=True)
class PairedTestResult:
    """better_a / better_b: examples where A's share of right seeds is higher / lower than B's;
    mean_diff: the mean over examples of that share's difference (A − B); test: which test gave p_value."""

    better_a: int
    better_b: int
    mean_diff: float
    p_value: float
    test: str


def paired_correctness_test(right_a: Sequence[float], right_b: Sequence[float]) -> PairedTestResult:
    """Are A and B equally accurate on these examples? right_x: per example, the share of x's seeds that got it
    right (0 or 1 with one seed).

    With 0/1 values on both sides this is the exact McNemar test. With shares (several seeds) a sign test over
    the examples where one side is higher would discard how much higher: an example A gets right in 5 of 5 seeds
    and B never counts as much as one A gets right in 4 and B in its only seed. The paired t-test on the
    per-example differences d = right_a − right_b keeps that (its mean is the accuracy difference; with n in
    the hundreds the mean of d is close to normal).
    """
    from scipy.stats import ttest_1samp

    _check_paired(right_a, right_b)
    a, b = np.asarray(right_a, dtype=float), np.asarray(right_b, dtype=float)
    d = a - b
    better_a, better_b = int((d > 0).sum()), int((d < 0).sum())
    if np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all():
        p = mcnemar_exact(a.astype(bool).tolist(), b.astype(bool).tolist()).p_value
        return PairedTestResult(better_a, better_b, float(d.mean()), p, "exact McNemar")
    if np.allclose(d, d[0]):  # no spread: equal everywhere (p = 1) or one side better on every example (p = 0)
        return PairedTestResult(better_a, better_b, float(d.mean()), 1.0 if d[0] == 0 else 0.0, "paired t-test")
    p = float(ttest_1samp(d, 0.0).pvalue)
    return PairedTestResult(better_a, better_b, float(d.mean()), p, "paired t-test")


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values))


def _resampled_diffs(a: np.ndarray, b: np.ndarray, metric_fn: Callable, idx: np.ndarray) -> np.ndarray:
    """metric(A[idx_r]) − metric(B[idx_r]) for each row r of idx (shape (R, n))."""
    if metric_fn is _mean and a.dtype.kind in "biuf" and b.dtype.kind in "biuf" and a.ndim == b.ndim == 1:
        # Fast path for the common case (per-example scores averaged): one vectorised mean per chunk.
        return a[idx].mean(axis=1) - b[idx].mean(axis=1)
    return np.array([metric_fn(a[row]) - metric_fn(b[row]) for row in idx], dtype=float)


def paired_bootstrap(values_a: Sequence, values_b: Sequence, metric_fn: Callable | None = None,
                     n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95) -> BootstrapResult:
    """Paired percentile bootstrap of metric(A) − metric(B).

    Each resample draws n example indices with replacement and applies the *same* indices to A
    and B (pairing keeps the per-example correlation, which makes the interval much tighter
    than resampling A and B separately). The interval is the (α/2, 1 − α/2) percentiles of the
    resampled differences, α = 1 − confidence.

    ``metric_fn`` maps an array of per-example values (indexed along axis 0) to a float; it
    defaults to the mean, so 0/1 correctness values give an accuracy difference. Corpus-level
    metrics can be bootstrapped by passing per-example records and a metric_fn over them.
    """
    _check_paired(values_a, values_b)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    metric_fn = metric_fn or _mean
    a, b = np.asarray(values_a), np.asarray(values_b)
    n = len(a)
    rng = np.random.default_rng(seed)
    diffs = np.concatenate([
        _resampled_diffs(a, b, metric_fn, rng.integers(0, n, size=(min(_CHUNK, n_resamples - start), n)))
        for start in range(0, n_resamples, _CHUNK)
    ])
    alpha = 1.0 - confidence
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    return BootstrapResult(diff=float(metric_fn(a) - metric_fn(b)), low=float(low), high=float(high))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation s = sqrt(Σ (x − x̄)² / (n − 1)); s = 0 for one value."""
    if len(values) == 0:
        raise DataError("cannot summarise zero values (no runs finished?)")
    mean = math.fsum(values) / len(values)
    if len(values) == 1:
        return float(mean), 0.0
    var = math.fsum((x - mean) ** 2 for x in values) / (len(values) - 1)
    return float(mean), math.sqrt(var)


def min_detectable_difference(n: int, discordant: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest difference of two paired accuracies a two-sided McNemar test on n examples detects
    with the given power (Connor 1987's sample size for paired proportions, solved for δ):

        n = [z_{1−α/2} · √ψ + z_{power} · √(ψ − δ²)]² / δ²

    δ = p₁₀ − p₀₁ is the difference of the accuracies, ψ = p₁₀ + p₀₁ the share of discordant examples
    (one system right, the other wrong). ψ ≥ |δ| always, so ψ is taken as max(discordant, δ): two systems
    that never disagreed still need about (z_{1−α/2} + z_{power})² / n ≈ 7.85 / n of one-sided
    disagreement to be told apart. Returns δ in (0, 1]; 1.0 when no difference is detectable at n.
    """
    from scipy.stats import norm

    if n < 1:
        return 1.0
    z_a, z_b = norm.ppf(1 - alpha / 2), norm.ppf(power)

    def excess(delta: float) -> float:  # > 0 once n examples are enough to detect delta
        psi = max(discordant, delta)
        return delta * math.sqrt(n) - z_a * math.sqrt(psi) - z_b * math.sqrt(max(psi - delta * delta, 0.0))

    if excess(1.0) < 0:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(60):  # bisection: excess grows with delta
        mid = (low + high) / 2
        low, high = (mid, high) if excess(mid) < 0 else (low, mid)
    return high
