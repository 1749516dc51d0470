"""Temperature scaling (tunelab.calibration) and the calibrated ensemble's pieces on synthetic distributions:
the fitted temperature is the one the labels were drawn with, an over-confident worse member no longer outvotes
a better timid one, and a dev example's held-out ensemble score does not depend on its own label."""

from __future__ import annotations

import numpy as np
import pytest

from tunelab.calibration import fit_temperature, temper
from tunelab.held_out_dev import stratified_folds
from tunelab.methods.ensemble import cross_fitted_mean, weighted_mean


def softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("true_temperature", [0.5, 3.0])
def test_the_fitted_temperature_is_the_one_the_labels_were_drawn_with(true_temperature):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(4000, 3))
    gold = np.array([rng.choice(3, p=p) for p in softmax(logits / true_temperature)])  # calibrated at T
    fitted = fit_temperature(softmax(logits), gold)
    assert fitted == pytest.approx(true_temperature, rel=0.15)


def test_tempering_keeps_the_predicted_label_and_one_is_the_identity():
    p = np.array([[0.7, 0.2, 0.1], [0.05, 0.9, 0.05]])
    np.testing.assert_allclose(temper(p, 1.0), p)
    for t in (0.3, 4.0):
        assert (temper(p, t).argmax(1) == p.argmax(1)).all()
        np.testing.assert_allclose(temper(p, t).sum(1), 1.0)
    assert temper(p, 4.0)[0, 0] < 0.7 < temper(p, 0.3)[0, 0]


def member(gold: np.ndarray, accuracy: float, confidence: float, rng) -> np.ndarray:
    """Two-class distributions right on `accuracy` of the examples, always `confidence` sure of their answer."""
    right = rng.random(len(gold)) < accuracy
    answer = np.where(right, gold, 1 - gold)
    p = np.full((len(gold), 2), 1 - confidence)
    p[np.arange(len(gold)), answer] = confidence
    return p


def test_an_overconfident_worse_member_no_longer_outvotes_a_better_timid_one():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 2, size=3000)
    loud, quiet = member(gold, 0.7, 0.999, rng), member(gold, 0.9, 0.7, rng)
    plain = weighted_mean([loud, quiet], [0.5, 0.5], [1.0, 1.0])
    assert (plain.argmax(1) == loud.argmax(1)).all()  # as it is, the mean is the loud member's vote
    dev, test = slice(0, 1000), slice(1000, None)
    temperatures = [fit_temperature(d[dev], gold[dev]) for d in (loud, quiet)]
    calibrated = weighted_mean([loud[test], quiet[test]], [0.5, 0.5], temperatures)
    assert temperatures[0] > 1 > temperatures[1]  # the loud one softened, the timid one sharpened
    assert (calibrated.argmax(1) == gold[test]).mean() > 0.85 > (plain[test].argmax(1) == gold[test]).mean()


def test_a_dev_examples_held_out_ensemble_score_does_not_depend_on_its_own_label():
    rng = np.random.default_rng(2)
    gold = rng.integers(0, 2, size=32)
    dists = [member(gold, 0.8, 0.95, rng), member(gold, 0.85, 0.7, rng)]
    fold = stratified_folds(gold, seed=13, folds=10)
    held = cross_fitted_mean(dists, [0.5, 0.5], gold, fold)
    for i in (0, 7, 19):
        flipped = gold.copy()
        flipped[i] = 1 - flipped[i]
        again = cross_fitted_mean(dists, [0.5, 0.5], flipped, fold)
        np.testing.assert_allclose(again[fold == fold[i]], held[fold == fold[i]])  # its own fold: unchanged
    flipped = gold.copy()
    flipped[:8] = 1 - flipped[:8]
    assert not np.allclose(cross_fitted_mean(dists, [0.5, 0.5], flipped, fold)[fold != fold[0]], held[fold != fold[0]])
