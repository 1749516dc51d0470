"""What a classification predictor returns for each example: its label and every label's score.

    {"prediction": "positive", "scores": {"negative": 0.1, "positive": 0.9}}

Scores are probabilities or log-scores, whichever the strategy computes; readers that need a distribution
(distill, ensemble) turn either into one (tunelab.methods.distill.distribution).
"""

from __future__ import annotations

import numpy as np


def label_outputs(scores, labels: list[str]) -> list[dict]:
    """(N, L) label scores (rows in `labels` order) → one output per row; the prediction is the first best label."""
    rows = np.asarray(scores, dtype=np.float64)
    return [{"prediction": labels[int(row.argmax())], "scores": dict(zip(labels, row.tolist()))} for row in rows]
