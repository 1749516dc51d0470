"""Temperature scaling (Guo et al., 2017): one scalar per model that makes its probabilities mean what they say.

A model's label distribution p becomes p_T ∝ p^(1/T) — its logits divided by T, as log p is the logits up to a
constant. T > 1 softens an over-confident model, T < 1 sharpens a timid one; the predicted label never
changes. T is the value that maximises the likelihood of gold labels, searched on a log-spaced grid (one
parameter: a few dozen labelled examples fix it well enough, and a grid cannot diverge when they are all
right).
"""

from __future__ import annotations

import numpy as np

TEMPERATURES = np.exp(np.linspace(np.log(0.05), np.log(20.0), 121))
"""The grid T is chosen from: 0.05 … 20, 5% apart."""
FLOOR = 1e-12
"""Probabilities are clipped here before the log, so a one-hot distribution stays finite."""


def temper(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """(N, L) distributions → (N, L) distributions p^(1/T), renormalised row by row."""
    logits = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), FLOOR, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(probabilities: np.ndarray, gold: np.ndarray) -> float:
    """Mean -log p(gold) over the rows."""
    chosen = np.asarray(probabilities)[np.arange(len(gold)), np.asarray(gold, dtype=int)]
    return float(-np.log(np.clip(chosen, FLOOR, 1.0)).mean())


def fit_temperature(probabilities: np.ndarray, gold: np.ndarray) -> float:
    """The grid's T under which `probabilities` give the gold label ids the highest likelihood (1.0 without examples);
    a tie goes to the T nearest 1 (the model left as it is)."""
    if len(gold) == 0:
        return 1.0
    losses = np.array([negative_log_likelihood(temper(probabilities, t), gold) for t in TEMPERATURES])
    best = np.flatnonzero(losses <= losses.min() + 1e-12)
    return float(TEMPERATURES[min(best, key=lambda i: abs(np.log(TEMPERATURES[i])))])
