"""Which field of a user's records holds the text and which the label, and what the labels are.

Used by `tunelab init` and `tunelab data check`, which see a data file before any experiment file
exists. A field is chosen only when the choice is clear (a conventional name, or the only field
that fits); otherwise the caller is told which option to pass, never handed a guess.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from tunelab.errors import DataError

TEXT_NAMES = ("text", "sentence", "review", "content", "document", "utterance", "comment", "tweet", "body", "input")
PAIR_NAMES = (("text", "text_pair"), ("text_a", "text_b"), ("sentence1", "sentence2"), ("premise", "hypothesis"),
              ("question1", "question2"), ("question", "sentence"))
"""Conventional (first, second) field names of sentence-pair data: Hugging Face's, PET's, GLUE's (MRPC, RTE,
MNLI, QQP, QNLI)."""
LABEL_NAMES = ("label", "labels", "class", "category", "sentiment", "intent", "target", "gold", "y")
MAX_LABELS = 50
"""More distinct values than this is not a label set a K-shot classification sweep can cover."""
FREE_TEXT_DISTINCT = 10
"""From this many distinct values, a field where most records hold a value of their own is no label set."""


@dataclass(frozen=True)
class Fields:
    text: str
    label: str
    label_names: list[str]
    integer_labels: bool
    """Integer labels index `label_names` (0..N-1) and carry no words a prompt could use."""
    notes: tuple[str, ...] = ()
    """How each choice was made, in words, for the user to read."""
    text_pair: str | None = None
    """The second text of sentence-pair data (task.type pair_classification), else None."""


def record_fields(records: list[dict]) -> list[str]:
    """Field names in first-seen order (tunelab's own `_source`-style keys left out)."""
    seen: dict[str, None] = {}
    for record in records:
        seen.update(dict.fromkeys(k for k in record if not k.startswith("_")))
    return list(seen)


def mostly(records: list[dict], field: str, test, share: float = 0.95) -> bool:
    """`test` holds for at least `share` of the records (a few broken rows do not hide a field; they are
    reported as problems of their own lines). A conventional name needs only a majority: the name says it."""
    return sum(1 for r in records if test(r.get(field))) >= share * len(records)


def is_label_value(value) -> bool:
    return (isinstance(value, str) and value.strip() != "") or (isinstance(value, int) and not isinstance(value, bool))


def detect_fields(records: list[dict], source: str, text_field: str | None = None, label_field: str | None = None,
                  text_pair_field: str | None = None) -> Fields:
    """The text (and second text, for sentence pairs) and label fields and the label names of `records` (read
    from `source`); DataError (exit 2) naming the option to pass when a field cannot be decided."""
    if not records:
        raise DataError(f"{source}: holds no records; a data file needs one example per line/row")
    fields = record_fields(records)
    notes = []
    for given, option in ((label_field, "--label-field"), (text_field, "--text-field"), (text_pair_field, "--text-pair-field")):
        if given is not None and given not in fields:
            raise DataError(f"{source}: {option} {given!r} is not a field of the data (fields: {', '.join(fields)})")
    label, how = label_field, "given by --label-field"
    if label is None:
        label, how = choose_label(records, fields, source)
    notes.append(f"label field: {label!r} ({how})")
    texts = [f for f in fields if f != label]
    text, pair, how = choose_texts(records, texts, source, text_field, text_pair_field)
    notes.append(f"text field: {text!r} ({how})" if pair is None else
                 f"text fields: {text!r} and {pair!r}, a sentence pair ({how})")
    names, integer = label_set(records, label, source)
    notes.append(f"labels: {', '.join(names)}" + (" (integer labels: indices into task.label_names)" if integer else ""))
    return Fields(text, label, names, integer, tuple(notes), pair)


def choose_texts(records: list[dict], fields: list[str], source: str, text_field: str | None,
                 text_pair_field: str | None) -> tuple[str, str | None, str]:
    """(text, second text or None, how they were chosen). A conventional pair of names that both hold text
    makes sentence-pair data; with --text-field, only a pair that starts with that field."""
    if text_pair_field is not None:
        if text_field is None:
            text_field, how = choose_text(records, [f for f in fields if f != text_pair_field], source)
        else:
            how = "given by --text-field"
        if text_field == text_pair_field:
            raise DataError(f"{source}: --text-field and --text-pair-field name the same field {text_field!r}; name two fields")
        return text_field, text_pair_field, f"the second given by --text-pair-field, the first {how}"
    is_text = lambda v: isinstance(v, str)  # noqa: E731
    pairs = [(a, b) for a, b in PAIR_NAMES if a in fields and b in fields and text_field in (None, a)
             and mostly(records, a, is_text, 0.5) and mostly(records, b, is_text, 0.5)]
    if len(pairs) == 1:
        return *pairs[0], "conventional pair names"
    if len(pairs) > 1:
        raise DataError(f"{source}: several field pairs could be the sentence pair ({', '.join(f'{a}/{b}' for a, b in pairs)}); "
                        f"pass --text-field FIRST --text-pair-field SECOND")
    if text_field is not None:
        return text_field, None, "given by --text-field"
    text, how = choose_text(records, fields, source)
    return text, None, how


def choose_label(records: list[dict], fields: list[str], source: str) -> tuple[str, str]:
    known = [f for f in fields if f.lower() in LABEL_NAMES and mostly(records, f, is_label_value, 0.5)]
    if len(known) == 1:
        return known[0], "a conventional label name"
    if len(known) > 1:
        raise DataError(f"{source}: several fields could be the label ({', '.join(known)}); pass --label-field NAME")
    # a field of few repeated values (a class per record), e.g. `polarity: pos`
    few = [f for f in fields if mostly(records, f, is_label_value)
           and 2 <= len({str(r.get(f)) for r in records}) <= min(MAX_LABELS, max(2, len(records) // 2))]
    if len(few) == 1:
        return few[0], "the only field with a few repeated values"
    candidates = f"candidates: {', '.join(few)}" if few else f"fields: {', '.join(fields)}"
    raise DataError(f"{source}: cannot tell which field is the label ({candidates}); pass --label-field NAME")


def choose_text(records: list[dict], fields: list[str], source: str) -> tuple[str, str]:
    is_text = lambda v: isinstance(v, str)  # noqa: E731
    texts = [f for f in fields if mostly(records, f, is_text)]
    known = [f for f in fields if f.lower() in TEXT_NAMES and mostly(records, f, is_text, 0.5)]
    if len(known) == 1:
        return known[0], "a conventional text name"
    if len(texts) == 1:
        return texts[0], "the only text field"
    if not texts:
        raise DataError(f"{source}: no field holds text in (nearly) every record (fields: {', '.join(fields)}); "
                        f"pass --text-field NAME")
    raise DataError(f"{source}: cannot tell which field is the text ({', '.join(known or texts)} all hold text); pass "
                    f"--text-field NAME (sentence pairs: --text-field FIRST --text-pair-field SECOND)")


def is_free_text(values: list, records: int) -> bool:
    """Answers, not labels: enough distinct values that most of the `records` hold one of their own."""
    distinct = len(set(map(str, values)))
    return distinct >= FREE_TEXT_DISTINCT and distinct > records / 2


def label_set(records: list[dict], label: str, source: str) -> tuple[list[str], bool]:
    """Sorted label names; integer labels must be 0..N-1 (they index task.label_names, see data.validate)."""
    values = Counter(r.get(label) for r in records if is_label_value(r.get(label)))
    integers = {v for v in values if isinstance(v, int)}
    if integers and len(integers) != len(values):
        raise DataError(f"{source}: field {label!r} mixes integer and text labels; use one kind")
    if integers:
        if sorted(integers) != list(range(len(integers))):
            raise DataError(f"{source}: integer labels in {label!r} must be 0..N-1 (they index task.label_names); found "
                            f"{sorted(integers)[:10]}. Renumber them or write the label names instead")
        names = [str(i) for i in sorted(integers)]
    else:
        names = sorted(str(v) for v in values)
    if len(names) < 2:
        raise DataError(f"{source}: field {label!r} has fewer than two distinct labels ({names}); a classifier needs two "
                        f"or more (pass --label-field if another field is the label)")
    if is_free_text(names, len(records)):
        raise DataError(f"{source}: field {label!r} has {len(names)} distinct values in {len(records)} records, most "
                        f"records a value of their own: text to generate or a free-form answer, not a label set. "
                        f"`tunelab init {source}` writes a generation experiment for it (pass --label-field if another "
                        f"field holds classes)")
    if len(names) > MAX_LABELS:
        raise DataError(f"{source}: field {label!r} has {len(names)} distinct values, too many for a label set; pass "
                        f"--label-field NAME for the field that holds the class")
    return names, bool(integers)
