"""Is the pick better than answering one label every time? A warning when the test split cannot say so.

With a small model, a hard task (RTE at K=16) and few test examples, every strategy can sit at the
level of a constant answer, and "pick the cheapest tied with the best" then recommends a model that
has learnt nothing. The constant answer compared with is the test split's most frequent label, the
best any constant answer scores there: a warning only, it chooses nothing, so reading the test labels
for it flatters no choice. Classification with accuracy as the main metric only (a multiple-choice
question's answers differ per example; other metrics score a constant answer differently).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from tunelab.report.abtest import ALPHA
from tunelab.report.leaderboard import row_label
from tunelab.stats import paired_correctness_test

CLASSIFICATION = ("classification", "pair_classification")


def constant_answer_warning(row, examples, metric: str) -> str | None:
    """The warning for `row` (the pick) over its stored test predictions, or None when it beats the constant answer."""
    task = ((row.config or {}).get("task") or {}).get("type", "classification")
    if metric != "accuracy" or task not in CLASSIFICATION or examples is None or not examples.refs:
        return None
    label, count = Counter(examples.refs).most_common(1)[0]
    constant = np.array([ref == label for ref in examples.refs], dtype=float)
    right = examples.right()
    test = paired_correctness_test(right, constant)
    if right.mean() > constant.mean() and test.p_value < ALPHA:
        return None
    return (f"{row_label(row)} is not shown better than answering '{label}' every time, which is right on "
            f"{100 * count / len(examples.refs):.1f}% of the test examples (its {100 * right.mean():.1f}%; {test.test} "
            f"p = {test.p_value:.2g} over {len(examples.refs)} examples), so the pick has not been shown to learn "
            f"the task: more labelled examples (a larger K), a larger model or a task-specific template come before "
            f"shipping it.")
