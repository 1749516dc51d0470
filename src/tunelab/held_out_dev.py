"""A dev score that the choice of checkpoint has not seen: cross-fitting over folds of the dev split.

A strategy that evaluates every epoch and keeps the best one reports the dev score of that epoch: the
largest of several noisy scores on the same few examples, higher than what the kept model scores on new
sentences. With LM-BFF's 32 dev sentences the gap is several points (MR, pet: best epochs 83.1, last
epochs 77.5), enough for the dev split to prefer it over a strategy that chose nothing on dev and is
better on test. Comparing strategies needs scores on an equal footing, so (nested cross-validation):

- the dev examples are dealt into FOLDS folds, stratified by label, fixed by the seed;
- for each fold, the evaluation that scores best on the *other* folds is chosen, and scores that fold;
- the held-out score is the metric of those out-of-fold predictions over the whole dev split.

Each example is scored by a checkpoint chosen without it, on nine tenths of the dev split: an almost
unbiased estimate of how well "keep the best epoch on dev" does on new examples. (Two halves, tried first,
choose on half the split and so judge a noisier choice than the one made: on MPQA they put pet 3 points
below its kept checkpoint.) The kept checkpoint itself is still chosen on the whole dev split. With one
evaluation there is nothing to choose and the plain dev score is already honest: no held-out score is made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

HELD_OUT_FILE = "held_out_dev.json"
FOLDS = 10
"""Folds of the dev split (fewer with fewer examples): each choice sees nine tenths of it."""

ToProbabilities = Callable[[Any, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(the Trainer's raw dev predictions, its label ids) → (label distributions (D, L), gold label ids (D,))."""
ScoreProbabilities = Callable[[np.ndarray, np.ndarray], dict]
"""(label distributions (D, L), gold label ids (D,)) → metrics."""


@dataclass
class DevReadout:
    """How a strategy's raw dev predictions become one label distribution per dev example."""

    to_probabilities: ToProbabilities
    score: ScoreProbabilities
    label_names: list[str]


@dataclass
class HeldOutDev:
    metrics: dict
    probabilities: np.ndarray
    """(D, L): each example's label distribution from the evaluation chosen on the other folds."""
    fold: np.ndarray
    chosen_epochs: list
    """Per fold, the epoch of the evaluation chosen on the other folds."""
    gold: list = field(default_factory=list)
    """The dev label ids in the order scored (the dev split's), for checking the record against the split."""
    evaluations: list = field(default_factory=list)
    """Every evaluation's (D, L) distributions, so the choice can be checked (or made another way) from the record."""

    def write(self, path: Path, metric: str, epochs: list, label_names: list[str]) -> None:
        record = {"metric": metric, "metrics": self.metrics, "evaluated_epochs": epochs, "chosen_epochs": self.chosen_epochs,
                  "fold_of_example": self.fold.tolist(), "label_names": label_names, "gold": self.gold,
                  "probabilities": np.round(self.probabilities, 6).tolist(),
                  "evaluations": [np.round(e, 5).tolist() for e in self.evaluations]}
        Path(path).write_text(json.dumps(record) + "\n", encoding="utf-8")


def read_held_out(path: Path) -> dict | None:
    """The record `HeldOutDev.write` left, or None without one."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def averaged_held_out(records: list[dict | None], score: ScoreProbabilities, gold: np.ndarray) -> HeldOutDev | None:
    """The held-out dev score of an ensemble of models each held out on the same folds: the mean of their
    out-of-fold distributions, every one from a checkpoint chosen without the example. None unless all have one."""
    if not records or any(r is None for r in records) or len({tuple(r["fold_of_example"]) for r in records}) != 1:
        return None
    probabilities = np.mean([np.asarray(r["probabilities"], dtype=np.float64) for r in records], axis=0)
    if len(probabilities) != len(gold):
        return None
    fold = np.asarray(records[0]["fold_of_example"], dtype=int)
    return HeldOutDev(score(probabilities, gold), probabilities, fold, [r["chosen_epochs"] for r in records],
                      np.asarray(gold).tolist())


def stratified_folds(gold: np.ndarray, seed: int, folds: int = FOLDS) -> np.ndarray:
    """Each example's fold (0 … folds-1): every label's examples, shuffled by the seed, dealt round-robin, the
    deal carried on from label to label so folds differ in size by at most one."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(gold), dtype=int)
    dealt = 0
    for label in np.unique(gold):
        members = rng.permutation(np.flatnonzero(gold == label))
        fold[members] = (dealt + np.arange(len(members))) % folds
        dealt += len(members)
    return fold


def choose(history: list[np.ndarray], gold: np.ndarray, mask: np.ndarray, score: ScoreProbabilities, metric: str) -> int:
    """The index of the evaluation that scores best on the examples in `mask`; a tie goes to the later one
    (further trained, as the whole-dev choice prefers the lower dev loss on ties)."""
    values = [score(probabilities[mask], gold[mask]).get(metric, -np.inf) for probabilities in history]
    return max(range(len(values)), key=lambda i: (values[i], i))


def cross_fit(history: list[np.ndarray], gold: np.ndarray, fold: np.ndarray, score: ScoreProbabilities,
              metric: str) -> tuple[np.ndarray, list[int]]:
    """(each example's distribution from the evaluation chosen on the other folds, the evaluation chosen per fold)."""
    combined = np.empty_like(history[0])
    chosen = []
    for f in range(int(fold.max()) + 1):
        pick = choose(history, gold, fold != f, score, metric)
        combined[fold == f] = history[pick][fold == f]
        chosen.append(pick)
    return combined, chosen


@dataclass
class DevHistory:
    """Every dev evaluation's label distributions, recorded as the Trainer computes its dev metrics."""

    readout: DevReadout
    probabilities: list[np.ndarray] = field(default_factory=list)
    epochs: list = field(default_factory=list)
    gold: np.ndarray | None = None

    def record(self, predictions, label_ids) -> None:
        probabilities, gold = self.readout.to_probabilities(predictions, np.asarray(label_ids))
        self.probabilities.append(np.asarray(probabilities, dtype=np.float64))
        self.gold = np.asarray(gold)

    def held_out(self, metric: str, seed: int) -> HeldOutDev | None:
        """The cross-fitted score, or None when there was no choice to make (one evaluation) or too few examples."""
        if len(self.probabilities) < 2 or self.gold is None or len(self.gold) < 2:
            return None
        gold = self.gold
        fold = stratified_folds(gold, seed, min(FOLDS, len(gold)))
        combined, picks = cross_fit(self.probabilities, gold, fold, self.readout.score, metric)
        epochs = self.epochs if len(self.epochs) == len(self.probabilities) else list(range(1, len(self.probabilities) + 1))
        return HeldOutDev(self.readout.score(combined, gold), combined, fold, [epochs[i] for i in picks], gold.tolist(),
                          self.probabilities)
