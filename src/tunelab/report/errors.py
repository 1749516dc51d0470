"""Error analysis per leaderboard row, from its stored test predictions (seeds pooled).

Per class: precision, recall, F1 and support, and the confusion matrix (gold rows × predicted
columns, counts summed over the row's seeds). A row whose most frequent predicted label covers at
least ONE_CLASS of its predictions is flagged: its accuracy is the class balance, not skill. The most
confidently wrong test examples are ranked by the probability the row gave its (wrong) prediction.
Generation rows (no labels) have no classes: they are left out.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from tunelab.report.document import Table, Text
from tunelab.report.leaderboard import Row, row_label
from tunelab.report.recommend import Examples

ONE_CLASS = 0.9
"""Share of predictions with one label from which a row is flagged as (almost) a constant predictor."""
SHOWN_WRONG = 5
MAX_MATRIX = 20
"""More classes than this: the confusion matrix would be unreadable; per-class scores are still shown."""


@dataclass
class ErrorAnalysis:
    row: Row
    classes: list[str]
    confusion: dict[str, Counter]
    """gold label → Counter of predicted labels, summed over seeds."""
    per_class: dict[str, tuple[float, float, float, int]] = field(default_factory=dict)
    """label → (precision, recall, F1, support per seed)."""
    majority: tuple[str, float] = ("", 0.0)
    """The most frequent predicted label and its share of all predictions."""
    wrong: list[dict] = field(default_factory=list)
    """The most confidently wrong examples: text, gold, prediction, confidence, seeds wrong."""

    @property
    def one_class(self) -> bool:
        return self.majority[1] >= ONE_CLASS


def confidence(scores, predicted: str) -> float | None:
    """The probability given to the predicted label: scores already a distribution are used as they are,
    anything else (logits, label-word log-probabilities) goes through a softmax first."""
    if not isinstance(scores, dict) or predicted not in scores:
        return None
    values = {k: float(v) for k, v in scores.items() if isinstance(v, (int, float))}
    if not values:
        return None
    if all(0.0 <= v <= 1.0 for v in values.values()) and math.isclose(sum(values.values()), 1.0, abs_tol=1e-3):
        return values.get(predicted)
    top = max(values.values())
    total = sum(math.exp(v - top) for v in values.values())
    return math.exp(values[predicted] - top) / total


def analyse(row: Row, examples: Examples, label_names: list[str] | None = None) -> ErrorAnalysis | None:
    if "label" not in examples.rows[0][0]:
        return None  # generation: targets are texts, not classes
    seen = set(examples.refs) | {p for seed in examples.preds for p in seed}
    classes = [str(n) for n in (label_names or []) if str(n) in seen] + sorted(seen - {str(n) for n in label_names or []})
    confusion = {c: Counter() for c in classes}
    for seed in examples.preds:
        for gold, predicted in zip(examples.refs, seed):
            confusion[gold][predicted] += 1
    result = ErrorAnalysis(row, classes, confusion)
    seeds = len(examples.preds)
    for c in classes:
        tp = confusion[c][c]
        predicted = sum(confusion[g][c] for g in classes)
        support = sum(confusion[c].values())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result.per_class[c] = (precision, recall, f1, support // seeds)
    counts = Counter(p for seed in examples.preds for p in seed)
    label, count = counts.most_common(1)[0]
    result.majority = (label, count / sum(counts.values()))
    result.wrong = confidently_wrong(examples)
    return result


def confidently_wrong(examples: Examples) -> list[dict]:
    """Per wrong example its highest confidence over the seeds that got it wrong; the top SHOWN_WRONG."""
    found: dict[int, dict] = {}
    for rows in examples.rows:
        for i, (record, gold) in enumerate(zip(rows, examples.refs)):
            predicted = str(record.get("prediction"))
            if predicted == gold:
                continue
            entry = found.setdefault(i, {"text": example_text(record), "gold": gold, "prediction": predicted,
                                         "confidence": None, "seeds": 0})
            entry["seeds"] += 1
            p = confidence(record.get("scores"), predicted)
            if p is not None and (entry["confidence"] is None or p > entry["confidence"]):
                entry.update(confidence=p, prediction=predicted)
    ranked = sorted(found.values(), key=lambda e: (e["confidence"] is None, -(e["confidence"] or 0.0), -e["seeds"]))
    return ranked[:SHOWN_WRONG]


def example_text(record: dict) -> str:
    parts = [str(v) for k, v in record.items() if isinstance(v, str) and k not in ("label", "prediction")]
    text = " / ".join(parts)
    return text if len(text) <= 160 else text[:157] + "..."


def flag_one_class(analyses: list[ErrorAnalysis], recommendations: list) -> None:
    """A one-class row says so in its leaderboard verdict, and in the recommendation when it is the
    dev-best or the pick."""
    for a in analyses:
        if not a.one_class:
            continue
        a.row.verdict = (a.row.verdict or "–") + f"; one class ({a.majority[1]:.0%} '{a.majority[0]}')"
        for rec in recommendations:
            if a.row in (rec.best, rec.pick):
                rec.warnings.append(f"{row_label(a.row)} predicts '{a.majority[0]}' for {a.majority[1]:.0%} of the "
                                    f"test examples: its score is the class balance (see Error analysis).")


def error_blocks(analyses: list[ErrorAnalysis]) -> list:
    if not analyses:
        return [Text("No error analysis: the task has no classes (generation) or no stored test predictions.")]
    blocks = [
        Text(f"Per strategy, from the stored test predictions of its seeds (pooled). Confusion matrix: gold label "
             f"(rows) × predicted label (columns), counts summed over seeds. A strategy is flagged when ≥ "
             f"{ONE_CLASS:.0%} of its predictions are one label: its accuracy is then the class balance. Confidence: "
             f"the probability it gave its wrong prediction (label scores turned into probabilities by a softmax "
             f"where they are not already)."),
        Table(["strategy", "K", "most predicted label", "share of predictions", ""],
              [[row_label(a.row), "all" if a.row.k_shot is None else str(a.row.k_shot), a.majority[0],
                f"{a.majority[1]:.0%}", "predicts (almost) one class" if a.one_class else ""] for a in analyses],
              [{4} if a.one_class else set() for a in analyses]),
    ]
    for a in analyses:
        k = "all" if a.row.k_shot is None else a.row.k_shot
        blocks.append(Text(f"{row_label(a.row)} (K={k}, {a.row.model}, {len(a.row.seeds)} seed(s))"
                           + (f" — warning: {a.majority[1]:.0%} of its predictions are '{a.majority[0]}'." if a.one_class else ""),
                           "warning" if a.one_class else ""))
        matrix = len(a.classes) <= MAX_MATRIX
        headers = ["gold", "precision", "recall", "F1", "support"] + ([f"→ {c}" for c in a.classes] if matrix else [])
        body = [[c, *(f"{v * 100:.1f}" for v in a.per_class[c][:3]), str(a.per_class[c][3])]
                + ([str(a.confusion[c][p]) for p in a.classes] if matrix else []) for c in a.classes]
        blocks.append(Table(headers, body))
        if a.wrong:
            blocks.append(Table(["most confidently wrong", "gold", "predicted", "confidence", "wrong in seeds"],
                                [[w["text"], w["gold"], w["prediction"],
                                  "–" if w["confidence"] is None else f"{w['confidence']:.2f}",
                                  f"{w['seeds']}/{len(a.row.seeds)}"] for w in a.wrong]))
    return blocks
