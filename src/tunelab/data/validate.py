"""Check raw records against the task and normalise them into examples.

An example is the original record plus canonical keys: `text`, `text_pair` (pair tasks), `label`
(a label name, classification and multiple choice), `target` (generation), `choices` (multiple
choice), `_source` (`file:line`). Templates can still use every original field.
"""

from __future__ import annotations

import logging
import warnings

from tunelab.config import TaskConfig
from tunelab.data.loaders import ROW_SHAPE_KEY, SOURCE_KEY
from tunelab.errors import DataError

log = logging.getLogger(__name__)
CLASSIFICATION = ("classification", "pair_classification")


def normalise_records(records: list[dict], task: TaskConfig, split: str, label_names: list[str] | None) -> list[dict]:
    """Validate every record (missing field, bad label, empty text) and return normalised examples."""
    if not records:
        raise DataError(f"the {split} split is empty; it needs at least one example")
    if task.type == "token_classification":
        from tunelab.data.tokens import normalise_tagged

        return normalise_tagged(records, task, split, label_names)
    examples = [normalise_one(record, task, label_names) for record in records]
    warn_duplicates(examples, split)
    return examples


def normalise_one(record: dict, task: TaskConfig, label_names: list[str] | None) -> dict:
    where = record.get(SOURCE_KEY, "<data>")
    if task.type == "extractive_qa":
        from tunelab.data.squad import normalise_qa

        return normalise_qa(record, task, where)
    example = dict(record)
    example["text"] = text_field(record, task.text_field, where)
    if pair_field(task) is not None:
        example["text_pair"] = text_field(record, pair_field(task), where)
    if task.type in CLASSIFICATION:
        example["label"] = label_of(record, task, label_names, where)
    elif task.type == "multiple_choice":
        example["choices"] = choices_of(record, task, where)
        example["label"] = str(require(record, task.label_field, where))
        if example["label"] not in example["choices"]:
            raise DataError(f"{where}: label {example['label']!r} is not one of its {task.choices_field}: {example['choices']}")
    else:
        example["target"] = text_field(record, task.target_field, where)
    return example


def pair_field(task: TaskConfig) -> str | None:
    """The field of the second text when the task reads sentence pairs (pair_classification, or any task given a
    text_pair_field), else None."""
    if task.type == "pair_classification" or task.text_pair_field:
        return task.text_pair_field or "text_pair"
    return None


def require(record: dict, field: str, where: str):
    if record.get(field) is None:
        raise DataError(f"{where}: {why_missing(record, field)}")
    return record[field]


def why_missing(record: dict, field: str) -> str:
    """Why `field` has no value, in words the record cannot contradict: a short CSV row has the column
    in its header but no value for it, a JSON record may hold null, or the name may be wrong."""
    shape = record.get(ROW_SHAPE_KEY)
    if shape and field in record:
        filled = ", ".join(k for k, v in record.items() if not k.startswith("_") and v is not None) or "none"
        return (f"field {field!r} is missing in this row ({shape}; fields with a value: {filled}); check the row "
                f"for a missing delimiter, or quote a value that holds a line break")
    if field in record:
        return f"field {field!r} is null; give it a value or remove the record"
    fields = ", ".join(k for k in record if not k.startswith("_"))
    return f"missing field {field!r} (fields present: {fields}); set task.*_field to the right name"


def shape_note(record: dict) -> str:
    """' (the row has 3 values for 2 columns: ...)' for a CSV row of the wrong width, else ''."""
    shape = record.get(ROW_SHAPE_KEY)
    return f" ({shape}: quote values that hold the delimiter)" if shape else ""


def text_field(record: dict, field: str, where: str) -> str:
    value = require(record, field, where)
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} must be text, got {type(value).__name__}: {value!r}")
    if "\ufffd" in value:
        raise DataError(f"{where}: field {field!r} holds undecodable text (U+FFFD replacement characters); re-save the data as UTF-8")
    if not value.strip():
        raise DataError(f"{where}: field {field!r} is empty; fill it in, remove the record, or set "
                        f"data.skip_empty_text: true to leave such records out")
    return value


def label_of(record: dict, task: TaskConfig, label_names: list[str] | None, where: str) -> str:
    value = require(record, task.label_field, where)
    if label_names is None:
        return str(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DataError(f"{where}: label {value!r} must be a label name or an integer index")
    if isinstance(value, int):
        if not 0 <= value < len(label_names):
            raise DataError(f"{where}: label index {value} is outside the label set {label_names}")
        return label_names[value]
    if value not in label_names:
        raise DataError(f"{where}: label {value!r} is not in the label set {label_names} (task.label_names)"
                        + shape_note(record))
    return value


def choices_of(record: dict, task: TaskConfig, where: str) -> list[str]:
    choices = require(record, task.choices_field, where)
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
        raise DataError(f"{where}: field {task.choices_field!r} must be a list of at least two non-empty strings")
    return choices


def warn_duplicates(examples: list[dict], split: str) -> None:
    seen: dict[tuple, str] = {}
    duplicates = []
    for example in examples:
        key = (example["text"], example.get("text_pair"))
        if key in seen:
            duplicates.append(f"{example.get(SOURCE_KEY)} repeats {seen[key]}")
        else:
            seen[key] = example.get(SOURCE_KEY, "?")
    if duplicates:
        shown = "; ".join(duplicates[:3]) + (" ..." if len(duplicates) > 3 else "")
        warnings.warn(f"{split} split has {len(duplicates)} duplicate text(s): {shown}", stacklevel=2)


def infer_label_names(records: list[dict], task: TaskConfig) -> list[str]:
    """The sorted set of string labels in the training records (integer labels need task.label_names)."""
    values = {record.get(task.label_field) for record in records if record.get(task.label_field) is not None}
    if any(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return [str(v) for v in sorted(values)]
    names = sorted(str(v) for v in values)
    if len(names) < 2:
        raise DataError(f"training data has fewer than two distinct labels ({names}); check task.label_field")
    return names
