"""`tunelab data check`: what a classification data file holds and what is wrong with it, line by line.

A run stops at the first bad record (data.validate raises); a check is for fixing a file, so it
collects every problem the same checks find (each message names its `file:line`), plus what a
run would only warn about: duplicates, texts shared between train and test, and label imbalance.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.config import TaskConfig
from tunelab.data.fields import Fields, detect_fields
from tunelab.data.loaders import SOURCE_KEY, load_records, read_jsonl
from tunelab.data.validate import normalise_one
from tunelab.errors import DataError, ModelError

SHOWN = 20  # problems and duplicates listed per kind; the rest are counted
TOKENIZER_MODEL = "minilm-l6"  # the embedded encoder `tunelab init` writes for the head strategies


@dataclass
class SplitCheck:
    name: str
    source: str
    count: int = 0
    labels: Counter = field(default_factory=Counter)
    lengths: list[int] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    texts: dict = field(default_factory=dict)
    """(text, second text or None) → where it first appears (for duplicates and train/test overlap)."""
    first_label: dict = field(default_factory=dict)
    """where a text first appears → its label there."""


@dataclass
class DataCheck:
    fields: Fields
    splits: list[SplitCheck]
    overlap: list[str] = field(default_factory=list)
    tokenizer_note: str = ""

    @property
    def problems(self) -> list[str]:
        return [p for s in self.splits for p in s.problems]

    @property
    def usable(self) -> bool:
        return not self.problems


def read_collecting(source: str) -> tuple[list[dict], list[str]]:
    """Records and the lines that are not records. JSON Lines are read line by line so every bad line is
    listed; other formats fail as a whole (their parser stops at the first error: exit 2 with it)."""
    path = Path(source)
    if path.suffix.lower() != ".jsonl" or not path.is_file():
        return load_records(source), []
    problems: list[str] = []
    return read_jsonl(path, problems), problems


def require_files(data: str, test: str | None) -> None:
    """DATA and --test name readable files (a `datasets` split, hf:..., is read later): exit 2 saying which not."""
    for path, option in ((data, "DATA"), (test, "--test")):
        if not path or path.startswith("hf:"):
            continue
        if Path(path).is_dir():
            raise DataError(f"{option} {path} is a directory; name a data file (.jsonl, .json, .csv or .tsv) in it")
        if not Path(path).is_file():
            raise DataError(f"{option} {path}: file not found")


def check_data(train: str, test: str | None = None, text_field: str | None = None, label_field: str | None = None,
               tokenizer=None, text_pair_field: str | None = None,
               train_read: tuple[list[dict], list[str]] | None = None) -> DataCheck:
    """Check `train` (fields and labels are detected there, or given) and `test` against it. `train_read`:
    `read_collecting(train)` when the caller has read it already."""
    require_files(train, test)
    train_records, train_problems = train_read if train_read is not None else read_collecting(train)
    refuse_other_tasks(train_records, train)
    fields = detect_fields(train_records, train, text_field, label_field, text_pair_field)
    task = TaskConfig(type="pair_classification" if fields.text_pair else "classification", text_field=fields.text,
                      text_pair_field=fields.text_pair, label_field=fields.label, label_names=fields.label_names)
    splits = [check_split("train", train, train_records, train_problems, task)]
    if test:
        test_records, test_problems = read_collecting(test)
        splits.append(check_split("test", test, test_records, test_problems, task))
    report = DataCheck(fields, splits)
    if test:
        report.overlap = [f"{where} (test) repeats {splits[0].texts[text]} (train)"
                          for text, where in splits[1].texts.items() if text in splits[0].texts]
    add_lengths(report, tokenizer)
    return report


def refuse_other_tasks(records: list[dict], source: str) -> None:
    """Named-entity, extractive-QA and multiple-choice files are no classification data: say what they are and that init writes them."""
    from tunelab.init_choices import is_multiple_choice
    from tunelab.init_tasks import detect_shape

    shape = detect_shape(records)
    description = shape.description if shape is not None else None
    if description is None and is_multiple_choice(records):
        description = "multiple-choice questions (a `choices` list per record, the answer in `label`)"
    if description is not None:
        raise DataError(f"{source} holds {description}; `tunelab data check` reads classification data. "
                        f"`tunelab init {source}` checks every record as a run reads it and writes an experiment for it")


def check_split(name: str, source: str, records: list[dict], problems: list[str], task: TaskConfig) -> SplitCheck:
    split = SplitCheck(name, source, problems=list(problems))
    if not records and not problems:
        split.problems.append(f"{source}: the file holds no records")
    for record in records:
        try:
            example = normalise_one(record, task, task.label_names)
        except DataError as err:  # the run's own checks, collected instead of raised
            split.problems.append(str(err))
            continue
        split.count += 1
        split.labels[example["label"]] += 1
        where = record.get(SOURCE_KEY, "?")
        key = (example["text"], example.get("text_pair"))  # a pair repeats only when both texts do
        if key in split.texts:
            first = split.texts[key]
            clash = split.first_label[first] != example["label"]  # the same text taught two answers
            split.duplicates.append(f"{where} repeats {first}"
                                    + (f" with another label ({example['label']!r}, there {split.first_label[first]!r})" if clash else ""))
        else:
            split.texts[key] = where
            split.first_label[where] = example["label"]
    split.problems.sort(key=line_number)  # in file order, whichever check found them
    return split


def line_number(message: str) -> int:
    """The line a `file:LINE: ...` message names (0 when it names none)."""
    match = re.match(r".*?:(\d+)(?::|\s|$)", message)
    return int(match.group(1)) if match else 0


def add_lengths(report: DataCheck, tokenizer) -> None:
    """Token counts of every valid text (a pair as the encoder reads it: both texts), with the embedded encoder's
    tokenizer (the one `init` writes)."""
    if tokenizer is None:
        try:
            tokenizer = encoder_tokenizer()
        except ModelError as err:  # the model package is missing: the rest of the check still stands
            report.tokenizer_note = f"token lengths skipped: {err}"
            return
    for split in report.splits:
        firsts = [text for text, _ in split.texts]
        seconds = [pair for _, pair in split.texts] if report.fields.text_pair else None
        split.lengths = [len(ids) for ids in tokenizer(firsts, seconds, add_special_tokens=True)["input_ids"]] if firsts else []


def encoder_tokenizer():
    from tunelab.models import embedded_path, load_tokenizer

    return load_tokenizer(str(embedded_path(TOKENIZER_MODEL)))


def percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def length_line(lengths: list[int]) -> str:
    if not lengths:
        return "no valid texts"
    parts = ", ".join(f"p{q} {percentile(lengths, q)}" for q in (50, 90, 95, 99))
    return f"{parts}, max {max(lengths)} (mean {sum(lengths) / len(lengths):.1f})"


def listed(items: list[str], indent: str = "    ") -> list[str]:
    lines = [indent + item for item in items[:SHOWN]]
    if len(items) > SHOWN:
        lines.append(f"{indent}... and {len(items) - SHOWN} more")
    return lines


def format_check(report: DataCheck) -> str:
    lines = list(report.fields.notes)
    for split in report.splits:
        lines.append(f"{split.name}: {split.source}: {split.count} valid examples"
                     + (f", {len(split.problems)} problem(s)" if split.problems else ""))
        total = sum(split.labels.values()) or 1
        balance = ", ".join(f"{name} {split.labels[name]} ({100 * split.labels[name] / total:.1f}%)"
                            for name in report.fields.label_names)
        lines.append(f"  label balance: {balance}")
        if split.labels and min(split.labels[n] for n in report.fields.label_names) < 0.2 * max(split.labels.values()):
            lines.append("  warning: the rarest label has under a fifth of the commonest's examples; "
                         "report F1 beside accuracy (the written experiment does)")
        if split.lengths:
            lines.append(f"  tokens ({TOKENIZER_MODEL} tokenizer, special tokens included): {length_line(split.lengths)}")
        if split.duplicates:
            lines.append(f"  duplicates: {len(split.duplicates)} text(s) repeat an earlier one:")
            lines += listed(split.duplicates)
    if report.tokenizer_note:
        lines.append(report.tokenizer_note)
    if report.overlap:
        lines.append(f"train/test overlap: {len(report.overlap)} test text(s) also in train (scores on them are optimistic):")
        lines += listed(report.overlap)
    if report.problems:
        lines.append(f"problems ({len(report.problems)}), each with its line:")
        lines += listed(report.problems, "  ")
        lines.append("not usable: fix the problems above (or remove those records), then check again")
    else:
        lines.append("usable: no problems found")
    return "\n".join(lines)
