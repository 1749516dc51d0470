"""An unlabelled pool for learning from a model's own labels (distillation, self-training).

The pool is the training file with its label field dropped as each record is read, so no gold label can
reach whatever is trained on the pool. Callers exclude the texts of the K-shot train split (they add those
examples themselves, once), the K-shot dev split (the model choice must not be trained on) and the test
split (it scores the model: not even its texts are trained on); only texts are compared, no label is read.
"""

from __future__ import annotations

import random

from tunelab.config import DataConfig, TaskConfig
from tunelab.data.loaders import SOURCE_KEY, load_records
from tunelab.data.validate import pair_field, text_field


def text_only(example: dict, task: TaskConfig) -> dict:
    """The example's text (and text pair) and where it came from; nothing else, no label."""
    kept = {"text": example["text"]}
    if "text_pair" in example:
        kept["text_pair"] = example["text_pair"]
    if SOURCE_KEY in example:
        kept[SOURCE_KEY] = example[SOURCE_KEY]
    return kept


def unlabelled_pool(data: DataConfig, task: TaskConfig, exclude: list[dict], size: int, seed: int) -> list[dict]:
    """Up to `size` records of `data.train` drawn with `seed` (kept in file order), none of them in `exclude`
    (compared by text and text pair). The label field is dropped as each record is read; the other fields
    stay, normalised text and text pair included, so templates can read them."""
    if not data.train or size <= 0:
        return []
    taken = {(e["text"], e.get("text_pair")) for e in exclude}
    pair_at = pair_field(task)
    seen, candidates = set(taken), []
    for record in load_records(data.train):
        where = record.get(SOURCE_KEY, data.train)
        text = text_field(record, task.text_field, where)
        text_pair = text_field(record, pair_at, where) if pair_at else None
        if (text, text_pair) in seen:
            continue  # the excluded splits' own texts, and repeats within the file
        seen.add((text, text_pair))
        candidate = {k: v for k, v in record.items() if k not in (task.label_field, "label")}
        candidate.update(text=text, **({"text_pair": text_pair} if pair_at else {}))
        candidates.append(candidate)
    if size >= len(candidates):
        return candidates
    return [candidates[i] for i in sorted(random.Random(f"pool:{seed}").sample(range(len(candidates)), size))]
