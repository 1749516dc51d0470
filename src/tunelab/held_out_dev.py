"""A dev score that the choice of checkpoint has not seen: cross-fitting over two halves of the dev split.

A strategy that evaluates every epoch and keeps the best one reports the dev score of that epoch: the
largest of several noisy scores on the same few examples, higher than what the kept model scores on new
sentences. With LM-BFF's 32 dev sentences the gap is several points (MR, pet: best epochs 83.1, last
epochs 77.5), enough for the dev split to prefer it over a strategy that chose nothing on dev and is
better on test. Comparing strategies needs scores on an equal footing, so:

- the dev examples are split in two halves, stratified by label, fixed by the seed;
- the evaluation that scores best on half A is scored on half B, and the one best on half B on half A;
- the held-out score is the metric of those out-of-half predictions over the whole dev split.

Each example is scored by a checkpoint chosen without it, so the score estimates how well "keep the best
epoch on dev" does on new examples (a little pessimistically: each choice sees half of the dev split). The
kept checkpoint itself is still chosen on the whole dev split, as before. With one evaluation there is
nothing to choose and the plain dev score is already honest: no held-out score is made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

HELD_OUT_FILE = "held_out_dev.json"

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
    """(D, L): each example's label distribution from the evaluation chosen on the other half."""
    in_half_a: np.ndarray
    chosen_epochs: dict
    """{"on_half_a": epoch, "on_half_b": epoch}: the evaluation each half chose."""
    gold: list = field(default_factory=list)
    """The dev label ids in the order scored (the dev split's), for checking the record against the split."""

    def write(self, path: Path, metric: str, epochs: list, label_names: list[str]) -> None:
        record = {"metric": metric, "metrics": self.metrics, "evaluated_epochs": epochs, "chosen_epochs": self.chosen_epochs,
                  "in_half_a": self.in_half_a.astype(int).tolist(), "label_names": label_names, "gold": self.gold,
                  "probabilities": np.round(self.probabilities, 6).tolist()}
        Path(path).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def read_held_out(path: Path) -> dict | None:
    """The record `HeldOutDev.write` left, or None without one."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def averaged_held_out(records: list[dict | None], score: ScoreProbabilities, gold: np.ndarray) -> HeldOutDev | None:
    """The held-out dev score of an ensemble of models each held out on the same halves: the mean of their
    out-of-half distributions, every one from a checkpoint chosen without the example. None unless all have one."""
    if not records or any(r is None for r in records) or len({tuple(r["in_half_a"]) for r in records}) != 1:
        return None
    probabilities = np.mean([np.asarray(r["probabilities"], dtype=np.float64) for r in records], axis=0)
    if len(probabilities) != len(gold):
        return None
    in_a = np.asarray(records[0]["in_half_a"], dtype=bool)
    return HeldOutDev(score(probabilities, gold), probabilities, in_a, {"members": [r["chosen_epochs"] for r in records]},
                      np.asarray(gold).tolist())


def stratified_halves(gold: np.ndarray, seed: int) -> np.ndarray:
    """A boolean mask of half A: within each label, a shuffled alternation, so both halves hold every label
    that occurs at least twice and the halves differ in size by at most one per label."""
    rng = np.random.default_rng(seed)
    in_a = np.zeros(len(gold), dtype=bool)
    flip = 0
    for label in np.unique(gold):
        members = rng.permutation(np.flatnonzero(gold == label))
        in_a[members[flip::2]] = True
        flip ^= len(members) % 2  # an odd label count gives its extra example to the other half next time
    return in_a


def choose(history: list[np.ndarray], gold: np.ndarray, mask: np.ndarray, score: ScoreProbabilities, metric: str) -> int:
    """The index of the evaluation that scores best on the examples in `mask`; a tie goes to the later one
    (further trained, as the whole-dev choice prefers the lower dev loss on ties)."""
    values = [score(probabilities[mask], gold[mask]).get(metric, -np.inf) for probabilities in history]
    return max(range(len(values)), key=lambda i: (values[i], i))


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
        """The cross-fitted score, or None when there was no choice to make (one evaluation) or no halves."""
        if len(self.probabilities) < 2 or self.gold is None or len(self.gold) < 2:
            return None
        gold, score = self.gold, self.readout.score
        in_a = stratified_halves(gold, seed)
        on_a, on_b = choose(self.probabilities, gold, in_a, score, metric), choose(self.probabilities, gold, ~in_a, score, metric)
        combined = np.where(in_a[:, None], self.probabilities[on_b], self.probabilities[on_a])
        epochs = self.epochs if len(self.epochs) == len(self.probabilities) else list(range(1, len(self.probabilities) + 1))
        return HeldOutDev(score(combined, gold), combined, in_a, {"on_half_a": epochs[on_a], "on_half_b": epochs[on_b]},
                          gold.tolist())
