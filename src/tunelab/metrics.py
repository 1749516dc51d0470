"""Evaluation metrics, looked up by name, each knowing which direction is better.

Conventions (fixed here so reports never mix scales):

- ``accuracy``, ``f1``, ``per_class_f1``, ``mcc`` and ``exact_match`` are fractions: accuracy,
  F1 and exact match lie in [0, 1], MCC in [-1, 1].
- ``bleu``, ``rouge1``, ``rouge2`` and ``rougeL`` are on 0–100, as sacrebleu reports BLEU (ROUGE
  F-measures are multiplied by 100 to match).

Predictions and references are strings: label names for classification, generated text for
generation. Classification metrics compare label strings exactly (a verbalizer or parser turns
model output into a label name before it gets here); ``exact_match`` normalises first.

Every value returned is a plain Python ``float`` (JSON-serialisable, no numpy scalars).
``per_class_f1`` returns ``{label: F1}``; :func:`compute_metrics` flattens it into ``f1_<label>``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Literal, Sequence

from tunelab.errors import ConfigError, DataError

MetricValue = float | dict[str, float]
# fn(predictions, references, labels) -> value; `labels` fixes the class set (classification only).
MetricFn = Callable[[Sequence[str], Sequence[str], Sequence[str] | None], MetricValue]


@dataclass(frozen=True)
class Metric:
    """A named metric: how to compute it and which direction counts as an improvement."""

    name: str
    fn: MetricFn
    higher_is_better: bool
    kind: Literal["classification", "generation", "token_classification"]

    def __call__(self, predictions: Sequence[str], references: Sequence[str],
                 labels: Sequence[str] | None = None) -> MetricValue:
        _check_inputs(predictions, references)
        return self.fn(list(predictions), list(references), list(labels) if labels is not None else None)


_REGISTRY: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    """Add a metric to the registry; a name can be registered only once (silent overrides hide bugs)."""
    if metric.name in _REGISTRY:
        raise ValueError(f"metric {metric.name!r} is already registered")
    _REGISTRY[metric.name] = metric
    return metric


def available_metrics() -> list[str]:
    """Names of all registered metrics, sorted."""
    return sorted(_REGISTRY)


def get_metric(name: str) -> Metric:
    """Look a metric up by name; an unknown name is a ConfigError that suggests the closest one."""
    try:
        return _REGISTRY[name]
    except KeyError:
        pass
    suggestion = _suggest(name)
    hint = f" Did you mean {suggestion!r}?" if suggestion else ""
    raise ConfigError(f"unknown metric {name!r}.{hint} Available: {', '.join(available_metrics())}.")


# Names other libraries use for our metrics: only used to suggest the right name, never accepted,
# so a config always says exactly one thing.
_OTHER_NAMES = {
    "acc": "accuracy", "macro_f1": "f1", "f1_macro": "f1", "matthews": "mcc", "matthews_corrcoef": "mcc",
    "em": "exact_match", "sacrebleu": "bleu", "rouge_l": "rougeL", "rougelsum": "rougeL",
}


def _suggest(name: str) -> str | None:
    """The registered name closest to an unknown one (known aliases first, then difflib)."""
    key = name.lower()
    if _OTHER_NAMES.get(key) in _REGISTRY:
        return _OTHER_NAMES[key]
    # Compare lowercased so that e.g. "RougeL2" still lines up with "rouge2".
    by_lower = {n.lower(): n for n in available_metrics()}
    close = difflib.get_close_matches(key, list(by_lower), n=1, cutoff=0.0)
    return by_lower[close[0]] if close else None


def compute_metrics(names: Sequence[str], predictions: Sequence[str], references: Sequence[str],
                    labels: Sequence[str] | None = None) -> dict[str, float]:
    """Compute several metrics at once; dict-valued ones (``per_class_f1``) become ``f1_<label>`` keys."""
    metrics = [get_metric(n) for n in names]  # resolve all names first: fail before any work
    results: dict[str, float] = {}
    for metric in metrics:
        value = metric(predictions, references, labels)
        if isinstance(value, dict):
            results.update({f"f1_{label}": score for label, score in value.items()})
        else:
            results[metric.name] = value
    return results


# --------------------------------------------------------------------------- input checks


def _check_inputs(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) == 0 or len(references) == 0:
        raise DataError("cannot compute a metric on zero examples: predictions and references are empty")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references: they must pair up")


def _label_set(predictions: list[str], references: list[str], labels: list[str] | None) -> list[str]:
    # Without an explicit label set, a class the model never predicts (or a stray prediction)
    # must still count, so take the union of both sides.
    return labels if labels is not None else sorted(set(references) | set(predictions))


# --------------------------------------------------------------------------- classification


def accuracy(predictions: list[str], references: list[str], labels: list[str] | None = None) -> float:
    """Fraction of exact label matches: (1/n) Σ [pred_i = ref_i]."""
    return sum(p == r for p, r in zip(predictions, references)) / len(references)


def per_class_f1(predictions: list[str], references: list[str],
                 labels: list[str] | None = None) -> dict[str, float]:
    """F1 per class: F1_c = 2·TP_c / (2·TP_c + FP_c + FN_c), 0 when the class never occurs on either side."""
    from sklearn.metrics import f1_score

    classes = _label_set(predictions, references, labels)
    scores = f1_score(references, predictions, labels=classes, average=None, zero_division=0)
    return {label: float(s) for label, s in zip(classes, scores)}


def macro_f1(predictions: list[str], references: list[str], labels: list[str] | None = None) -> float:
    """Macro-F1: the unweighted mean of per-class F1, (1/|C|) Σ_c F1_c."""
    scores = per_class_f1(predictions, references, labels)
    return float(sum(scores.values()) / len(scores))


def mcc(predictions: list[str], references: list[str], labels: list[str] | None = None) -> float:
    """Matthews correlation (multi-class form of Gorodkin): in [-1, 1], 0 for a constant predictor.

    Binary case: (TP·TN − FP·FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)); 0 when a factor is 0.
    """
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(references, predictions))


# --------------------------------------------------------------------------- generation

_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Strip, lowercase and collapse runs of whitespace to one space (the exact-match normalisation)."""
    return _WHITESPACE.sub(" ", text.strip().lower())


def exact_match(predictions: list[str], references: list[str], labels: list[str] | None = None) -> float:
    """Fraction of predictions equal to their reference after :func:`normalize_text`."""
    hits = sum(normalize_text(p) == normalize_text(r) for p, r in zip(predictions, references))
    return hits / len(references)


def bleu(predictions: list[str], references: list[str], labels: list[str] | None = None) -> float:
    """Corpus BLEU (sacrebleu: 13a tokenisation, exp smoothing), 0–100, one reference each.

    BLEU = BP · exp(Σ_{n=1..N} (1/N) log p_n), BP = min(1, exp(1 − r/c)), N = 4.
    """
    from sacrebleu.metrics import BLEU

    # effective_order only matters when no hypothesis in the whole corpus has n tokens (short
    # answers): sacrebleu's default then scores identical outputs 0; this lowers N instead.
    # On any corpus with a 4-gram somewhere the score equals sacrebleu's default corpus BLEU.
    return float(BLEU(effective_order=True).corpus_score(predictions, [references]).score)


@lru_cache(maxsize=1)
def _rouge_scorer():
    # Building the scorer loads the Porter stemmer; do it once per process.
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def _rouge(kind: str) -> MetricFn:
    def fn(predictions: list[str], references: list[str], labels: list[str] | None = None) -> float:
        scorer = _rouge_scorer()
        # RougeScorer.score takes (target, prediction); the reference is the target.
        total = sum(scorer.score(r, p)[kind].fmeasure for p, r in zip(predictions, references))
        return float(100.0 * total / len(references))

    fn.__name__ = kind
    # rouge-score's tokenizer keeps only [a-z0-9] runs: fine for English, meaningless for other scripts.
    fn.__doc__ = (f"Mean {kind} F-measure over examples ×100 (rouge-score, Porter stemming): "
                  "F = 2·P·R / (P + R) on n-gram (rouge1/2) or longest-common-subsequence (rougeL) overlap.")
    return fn


# --------------------------------------------------------------------------- registry contents

for _metric in (
    Metric("accuracy", accuracy, higher_is_better=True, kind="classification"),
    Metric("f1", macro_f1, higher_is_better=True, kind="classification"),
    Metric("per_class_f1", per_class_f1, higher_is_better=True, kind="classification"),
    Metric("mcc", mcc, higher_is_better=True, kind="classification"),
    Metric("exact_match", exact_match, higher_is_better=True, kind="generation"),
    Metric("bleu", bleu, higher_is_better=True, kind="generation"),
    Metric("rouge1", _rouge("rouge1"), higher_is_better=True, kind="generation"),
    Metric("rouge2", _rouge("rouge2"), higher_is_better=True, kind="generation"),
    Metric("rougeL", _rouge("rougeL"), higher_is_better=True, kind="generation"),
):
    register_metric(_metric)

from tunelab import metrics_ner  # noqa: E402,F401  (registers the entity-level metrics of token classification)
from tunelab import metrics_qa  # noqa: E402,F401 (registers squad_em, squad_f1: extractive QA)
