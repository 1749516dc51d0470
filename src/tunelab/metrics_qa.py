"""SQuAD metrics for extractive question answering: exact match and token F1.

As the official SQuAD v1.1 evaluation script defines them (Rajpurkar et al. 2016):

- normalise an answer: lowercase, drop punctuation (`string.punctuation`), drop the articles
  a / an / the, collapse whitespace;
- ``squad_em``: 1 when the normalised prediction equals a normalised reference;
- ``squad_f1``: over normalised tokens, F1 = 2·P·R / (P + R) with P = |common| / |prediction|,
  R = |common| / |reference| (common: the multiset intersection), 0 when nothing is common;
- each question scores against its best-matching reference (the max over references), and the
  metric is the mean over questions. Fractions in [0, 1], like the other metrics of tunelab.

A reference is the list of an example's gold answers (a single string counts as a list of one).
Registered in `tunelab.metrics` by importing this module there.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence

from tunelab.metrics import Metric, register_metric

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation, in the official order: lowercase, punctuation, articles, whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_score(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(reference).split()
    same = sum((Counter(predicted) & Counter(gold)).values())
    if same == 0:
        return 0.0  # also when either side normalises to nothing (the official script's rule)
    precision, recall = same / len(predicted), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def best_over_references(score, prediction: str, references) -> float:
    references = [references] if isinstance(references, str) else list(references)
    return max(score(prediction, reference) for reference in references)


def _mean_best(score):
    def fn(predictions: Sequence[str], references: Sequence, labels=None) -> float:
        return sum(best_over_references(score, p, r) for p, r in zip(predictions, references)) / len(references)

    return fn


squad_em = _mean_best(exact_score)
squad_em.__doc__ = "Mean over questions of max over references of [normalize(pred) = normalize(ref)]."
squad_f1 = _mean_best(token_f1)
squad_f1.__doc__ = "Mean over questions of max over references of the token F1 of normalised answers."

register_metric(Metric("squad_em", squad_em, higher_is_better=True, kind="generation"))
register_metric(Metric("squad_f1", squad_f1, higher_is_better=True, kind="generation"))
