"""Assemble train/dev/test splits for one experiment and seed."""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass, field

from tunelab.config import DataConfig, TaskConfig
from tunelab.data.loaders import SOURCE_KEY, load_records
from tunelab.data.sampling import few_shot_splits, held_out_test, sample_examples
from tunelab.data.validate import CLASSIFICATION, infer_label_names, normalise_records
from tunelab.errors import DataError


@dataclass
class Splits:
    train: list[dict] = field(default_factory=list)
    dev: list[dict] = field(default_factory=list)
    test: list[dict] = field(default_factory=list)
    label_names: list[str] | None = None
    held_out: list[dict] = field(default_factory=list)
    """Every example `data.test_fraction` held out of data.train, scored (`test`) or not (past `max_test`)."""

    def not_for_pool(self) -> list[dict]:
        """The examples an unlabelled pool of data.train must leave out: the K-shot train and dev splits and the
        whole held-out test split, including its unscored part, which a larger `max_test` would score."""
        return self.train + self.dev + self.test + self.held_out


def load_split(source: str, task: TaskConfig, split: str, label_names: list[str] | None,
               skip_empty: bool = False) -> list[dict]:
    return normalise_records(read_records(source, task, split, skip_empty), task, split, label_names)


def read_records(source: str, task: TaskConfig, split: str, skip_empty: bool) -> list[dict]:
    records = load_records(source)
    return without_empty_text(records, task, split) if skip_empty else records


def without_empty_text(records: list[dict], task: TaskConfig, split: str) -> list[dict]:
    """`data.skip_empty_text`: drop records whose text field is a blank string, naming each in one warning."""
    def blank(record: dict) -> bool:
        value = record.get(task.text_field)
        return isinstance(value, str) and not value.strip()

    dropped = [r.get(SOURCE_KEY, "?") for r in records if blank(r)]
    if dropped:
        warnings.warn(f"data.skip_empty_text: left out {len(dropped)} {split} record(s) with an empty "
                      f"{task.text_field!r}: {', '.join(dropped)}", stacklevel=2)
    return [r for r in records if not blank(r)]


def load_splits(data: DataConfig, task: TaskConfig, seed: int) -> Splits:
    """Load and validate every configured split; apply K-shot sampling (LM-BFF) when k_shot is set."""
    if not data.train and not data.test:
        raise DataError("the data section names no split: set data.train and/or data.test")
    train_records = read_records(data.train, task, "train", data.skip_empty_text) if data.train else []
    label_names = task.label_names
    if label_names is None and task.type in CLASSIFICATION and train_records:
        label_names = infer_label_names(train_records, task)
    if task.type == "token_classification":
        label_names = tagging_labels(task, train_records or (load_records(data.test) if data.test else []))
    train = normalise_records(train_records, task, "train", label_names) if data.train else []
    dev = load_split(data.dev, task, "dev", label_names, data.skip_empty_text) if data.dev else []
    test = load_split(data.test, task, "test", label_names, data.skip_empty_text) if data.test else []
    held_out = []
    if data.test_fraction:  # before any K-shot draw: no seed's train or dev example is ever a test example
        train, test = held_out_test(train, data.test_fraction, "label" if task.type in CLASSIFICATION else None)
        held_out = test
    if label_names is None and task.type in CLASSIFICATION:
        label_names = sorted({e["label"] for e in test})
    if data.k_shot:
        train, dev = sample_few_shot(train, data, task, seed, dev)
    if data.max_test:
        subset = first_or_drawn(test, data.max_test, data.max_test_seed)
        if task.type in CLASSIFICATION:
            warn_missing_classes(test, subset, data)
        test = subset
    warn_test_overlap(train + dev, test, seed)
    return Splits(train, dev, test, label_names, held_out)


def warn_test_overlap(seen: list[dict], test: list[dict], seed: int) -> None:
    """Test examples whose text this run also trains or chooses on score higher than new text would: named in one
    warning (the test file repeats the training file's texts; data check lists them all)."""
    where = {(e["text"], e.get("text_pair")): e.get(SOURCE_KEY, "?") for e in seen if "text" in e}
    repeats = [f"{e.get(SOURCE_KEY, '?')} repeats {where[key]}" for e in test if "text" in e
               and (key := (e["text"], e.get("text_pair"))) in where]
    if repeats:
        shown = "; ".join(repeats[:3]) + (" ..." if len(repeats) > 3 else "")
        warnings.warn(f"test split: {len(repeats)} of {len(test)} example(s) repeat a text of the train or dev split "
                      f"(seed {seed}): {shown}; their scores are optimistic: remove them from the test file, or hold "
                      f"the test split out of data.train with data.test_fraction", stacklevel=2)


def warn_missing_classes(test: list[dict], subset: list[dict], data: DataConfig) -> None:
    """Test files sorted by label (MR, Subj, MPQA) put one class first: their first N examples hold
    one class only, and an accuracy on them says nothing about the other."""
    kept, whole = {e["label"] for e in subset}, {e["label"] for e in test}
    if kept == whole:
        return
    missing = ", ".join(repr(label) for label in sorted(whole - kept, key=str))
    how = "set data.max_test_seed to draw them at random" if data.max_test_seed is None else "raise data.max_test"
    warnings.warn(f"data.max_test={data.max_test} keeps {len(subset)} of {len(test)} test examples, and none of "
                  f"class {missing}; {how}", stacklevel=2)


def tagging_labels(task: TaskConfig, records: list[dict]) -> list[str]:
    """The full IOB2 tag set: from task.label_names (tags or entity types), else from the records' tags."""
    from tunelab.data.tokens import infer_tag_names, tag_names

    return tag_names(task.label_names) if task.label_names else infer_tag_names(records, task)


def first_or_drawn(examples: list[dict], count: int, seed: int | None) -> list[dict]:
    """The first `count` examples, or (`seed` given) `count` drawn at random, kept in file order."""
    if seed is None or count >= len(examples):
        return examples[:count]
    return [examples[i] for i in sorted(random.Random(seed).sample(range(len(examples)), count))]


def sample_few_shot(train: list[dict], data: DataConfig, task: TaskConfig, seed: int, dev: list[dict]):
    if not train:
        raise DataError("data.k_shot needs data.train: K examples per class are drawn from it")
    dev_k = data.dev_k_shot or data.k_shot
    if task.type in CLASSIFICATION:
        return few_shot_splits(train, data.k_shot, dev_k, seed)
    # Tasks without a class structure: K means K examples in all.
    drawn = sample_examples(train, data.k_shot + dev_k, seed)
    return drawn[: data.k_shot], drawn[data.k_shot :]
