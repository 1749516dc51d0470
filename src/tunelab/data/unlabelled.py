"""An unlabelled pool for self-training (iPET): the training file with its labels dropped.

    pool = examples of data.train
           - every label field removed as the record is read (nothing downstream can see one)
           - minus the K-shot train examples (trained on with their gold labels)
           - minus anything whose text is a K-shot dev or a test example's text (dev chooses the model,
             test scores it: neither may be trained on, labelled or not)
           then `size` of them drawn at random by the seed, kept in file order

Only the texts of dev and test are compared; their labels are never looked at.
"""

from __future__ import annotations

import random

from tunelab.data.loaders import SOURCE_KEY, load_records
from tunelab.data.validate import text_field
from tunelab.errors import ConfigError
from tunelab.prompts import example_text


def unlabelled_record(record: dict, task) -> dict:
    """The record's fields without its label, text fields normalised as for labelled examples."""
    where = record.get(SOURCE_KEY, "<data>")
    example = {k: v for k, v in record.items() if k != task.label_field and k != "label"}
    example["text"] = text_field(record, task.text_field, where)
    if task.type == "pair_classification" or task.text_pair_field:
        example["text_pair"] = text_field(record, task.text_pair_field or "text_pair", where)
    return example


def unlabelled_pool(experiment, splits, size: int, seed: int, setting: str = "strategy.pool_size") -> list[dict]:
    """Up to `size` unlabelled examples of data.train, disjoint from the K-shot train, dev and test texts."""
    data, task = experiment.data, experiment.task
    if not data.train or not data.k_shot:
        raise ConfigError(f"{experiment.source}: self-training labels part of data.train that the K-shot split left "
                          "out; set data.train and data.k_shot (the LM-BFF protocol)")
    taken = {example_text(e) for split in (splits.train, splits.dev, splits.test) for e in split}
    candidates = [e for e in (unlabelled_record(r, task) for r in load_records(data.train)) if example_text(e) not in taken]
    if not candidates:
        raise ConfigError(f"{experiment.source}: data.train holds no example outside the K-shot train and dev splits "
                          f"(and the test texts); {setting} needs a larger training file")
    chosen = sorted(random.Random(seed).sample(range(len(candidates)), min(size, len(candidates))))
    return [candidates[i] for i in chosen]
