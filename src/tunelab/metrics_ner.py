"""Entity-level metrics of token classification, by seqeval (strict IOB2 mode), and entity spans.

A prediction and its reference are one sentence's IOB2 tags, as a list or as one string of tags
joined by spaces (how run results and stored predictions carry them). An entity counts as found
only when its type and both boundaries match exactly (CoNLL-2003's rule; seqeval
`mode="strict", scheme=IOB2`):

    precision = |predicted ∩ gold| / |predicted|,  recall = |predicted ∩ gold| / |gold|,
    F1 = 2·P·R / (P + R)     (micro-averaged over all entities of all sentences; 0 when undefined)

``per_type_f1`` gives F1 per entity type ({"PER": …}); compute_metrics flattens it into `f1_PER`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from tunelab.metrics import Metric, register_metric

TagSequence = str | Sequence[str]


@dataclass(frozen=True)
class Entity:
    """Words [start, end) of a sentence form an entity of `type`."""

    type: str
    start: int
    end: int


def as_tags(value: TagSequence) -> list[str]:
    return value.split() if isinstance(value, str) else list(value)


def entities(tags: TagSequence) -> list[Entity]:
    """The entities of one valid IOB2 sentence (an I-X continues only an X begun before it)."""
    found, start, kind = [], None, None
    for position, tag in enumerate(as_tags(tags) + ["O"]):
        continues = tag.startswith("I-") and kind == tag[2:]
        if start is not None and not continues:
            found.append(Entity(kind, start, position))
            start, kind = None, None
        if tag.startswith("B-") or (tag.startswith("I-") and not continues):
            start, kind = position, tag[2:]
    return found


def tags_of(spans: list[Entity], length: int) -> list[str]:
    """IOB2 tags of `length` words holding `spans` (which must not overlap)."""
    tags = ["O"] * length
    for span in spans:
        tags[span.start] = f"B-{span.type}"
        for position in range(span.start + 1, span.end):
            tags[position] = f"I-{span.type}"
    return tags


def entity_rows(tokens: list[str], tags: TagSequence) -> list[dict]:
    """The entities of tagged words as `predict` prints them: {text, type, start, end} (words [start, end))."""
    return [{"text": " ".join(tokens[e.start:e.end]), "type": e.type, "start": e.start, "end": e.end}
            for e in entities(tags)]


def _paired(predictions, references) -> tuple[list[list[str]], list[list[str]]]:
    preds, refs = [as_tags(p) for p in predictions], [as_tags(r) for r in references]
    for n, (p, r) in enumerate(zip(preds, refs)):
        if len(p) != len(r):
            raise ValueError(f"sentence {n}: {len(p)} predicted tags for {len(r)} words")
    return preds, refs


def _score(fn):
    def metric(predictions, references, labels=None) -> float:
        from seqeval.scheme import IOB2

        preds, refs = _paired(predictions, references)
        return float(fn(refs, preds, mode="strict", scheme=IOB2, zero_division=0))

    return metric


def per_type_f1(predictions, references, labels=None) -> dict[str, float]:
    """F1 per entity type over every type in the references, the predictions and the tag set."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    preds, refs = _paired(predictions, references)
    report = classification_report(refs, preds, mode="strict", scheme=IOB2, zero_division=0, output_dict=True)
    types = {t[2:] for t in labels or [] if t[:2] in ("B-", "I-")} | {k for k in report if not k.endswith(" avg")}
    return {kind: float(report.get(kind, {}).get("f1-score", 0.0)) for kind in sorted(types)}


def _entity_f1(refs, preds, **kwargs):
    from seqeval.metrics import f1_score

    return f1_score(refs, preds, **kwargs)


def _entity_precision(refs, preds, **kwargs):
    from seqeval.metrics import precision_score

    return precision_score(refs, preds, **kwargs)


def _entity_recall(refs, preds, **kwargs):
    from seqeval.metrics import recall_score

    return recall_score(refs, preds, **kwargs)


TOKEN_METRICS = ("entity_f1", "entity_precision", "entity_recall", "per_type_f1")

for _metric in (
    Metric("entity_f1", _score(_entity_f1), higher_is_better=True, kind="token_classification"),
    Metric("entity_precision", _score(_entity_precision), higher_is_better=True, kind="token_classification"),
    Metric("entity_recall", _score(_entity_recall), higher_is_better=True, kind="token_classification"),
    Metric("per_type_f1", per_type_f1, higher_is_better=True, kind="token_classification"),
):
    register_metric(_metric)
