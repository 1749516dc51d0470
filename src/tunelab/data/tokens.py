"""Token-classification data (`task.type: token_classification`): words and their IOB2 tags.

A record holds `tokens` (a list of words) and `tags` (one IOB2 tag per word: `O`, `B-TYPE`,
`I-TYPE`); the field names are `task.tokens_field` and `task.tags_field`. The example keeps both
lists and adds the canonical keys the shared machinery reads:

- `text`: the words joined by spaces (duplicate check, templates, `predict` output);
- `target`: the tags joined by spaces, the gold answer that run.score, the report and the
  entity metrics (`tunelab.metrics_ner`) compare predictions with.

The tag set is `task.label_names` or, when unset, every entity type found in the training data;
either way it is expanded to the full IOB2 set (`O`, then `B-X`, `I-X` per type, types sorted).
`label_names` may list the tags or just the entity types (`[PER, ORG, LOC, MISC]`).

An `I-X` that does not continue an entity of type X (after `O`, at the start, or after another
type) is invalid IOB2: it is repaired to `B-X` (what seqeval's lenient mode and conlleval read it
as), and one warning per split names every repaired line.
"""

from __future__ import annotations

import warnings

from tunelab.data.loaders import SOURCE_KEY
from tunelab.errors import DataError

OUTSIDE = "O"
PREFIXES = ("B", "I")


def tag_type(tag: str) -> str | None:
    """`PER` for `B-PER` / `I-PER`, None for `O`."""
    return None if tag == OUTSIDE else tag[2:]


def is_tag(value) -> bool:
    return isinstance(value, str) and (value == OUTSIDE or (value[:2] in ("B-", "I-") and len(value) > 2))


def tag_names(names: list[str]) -> list[str]:
    """The full IOB2 tag set of `names` (tags or bare entity types): `O`, then `B-X`, `I-X` per type."""
    types = sorted({tag_type(n) if is_tag(n) else n for n in names} - {None})
    return [OUTSIDE] + [f"{prefix}-{kind}" for kind in types for prefix in PREFIXES]


def infer_tag_names(records: list[dict], task) -> list[str]:
    """The IOB2 tag set of every well-formed tag in the records (bad ones are reported by `tagged_example`)."""
    found = {tag for r in records if isinstance(r.get(task.tags_field), list) for tag in r[task.tags_field] if is_tag(tag)}
    names = tag_names(sorted(found))
    if len(names) < 3:
        raise DataError(f"the training data holds no entity tags (B-X / I-X) in field {task.tags_field!r}; "
                        f"check task.tags_field, or set task.label_names to the entity types")
    return names


def tagged_example(record: dict, task, names: list[str] | None) -> tuple[dict, list[int]]:
    """(example, positions of repaired tags) of one record; a bad record raises DataError naming its line."""
    where = record.get(SOURCE_KEY, "<data>")
    tokens = word_list(record, task.tokens_field, where)
    tags = record.get(task.tags_field)
    if not isinstance(tags, list):
        raise DataError(f"{where}: field {task.tags_field!r} must be a list of IOB2 tags (one per token), "
                        f"got {type(tags).__name__ if tags is not None else 'nothing'}")
    if len(tags) != len(tokens):
        raise DataError(f"{where}: {len(tokens)} tokens but {len(tags)} tags; each token needs exactly one tag "
                        f"(fields {task.tokens_field!r} and {task.tags_field!r})")
    for position, tag in enumerate(tags):
        if not is_tag(tag):
            raise DataError(f"{where}: tag {tag!r} of token {position} ({tokens[position]!r}) is not IOB2; "
                            f"use O, B-TYPE or I-TYPE (e.g. B-PER)")
        if names is not None and tag not in names:
            raise DataError(f"{where}: tag {tag!r} of token {position} is not in the tag set {names} (task.label_names)")
    repaired, fixed = repair_iob2(tags)
    example = dict(record, tokens=tokens, tags=repaired, text=" ".join(tokens), target=" ".join(repaired))
    return example, fixed


def word_list(record: dict, field: str, where: str) -> list[str]:
    words = record.get(field)
    if not isinstance(words, list) or not words:
        shown = type(words).__name__ if words is not None else "nothing"
        raise DataError(f"{where}: field {field!r} must be a non-empty list of words (set task.tokens_field), got {shown}")
    for position, word in enumerate(words):
        if not isinstance(word, str) or not word.strip() or any(c.isspace() for c in word):
            raise DataError(f"{where}: token {position} of {field!r} is {word!r}; each token must be one word "
                            f"of text without spaces")
    return words


def repair_iob2(tags: list[str]) -> tuple[list[str], list[int]]:
    """Tags with each `I-X` that starts an entity turned into `B-X`, and the positions changed."""
    repaired, fixed = [], []
    previous = OUTSIDE
    for position, tag in enumerate(tags):
        if tag.startswith("I-") and tag_type(previous) != tag_type(tag):
            tag = "B-" + tag[2:]
            fixed.append(position)
        repaired.append(tag)
        previous = tag
    return repaired, fixed


def normalise_tagged(records: list[dict], task, split: str, names: list[str] | None) -> list[dict]:
    """Every record checked and normalised; one warning lists the lines whose IOB2 was repaired."""
    names = tag_names(names) if names else None  # a run's config may name the entity types only
    examples, repairs = [], []
    for record in records:
        example, fixed = tagged_example(record, task, names)
        examples.append(example)
        if fixed:
            repairs.append(f"{example.get(SOURCE_KEY, '<data>')} (token {', '.join(map(str, fixed))})")
    if repairs:
        shown = "; ".join(repairs[:5]) + (f"; and {len(repairs) - 5} more" if len(repairs) > 5 else "")
        warnings.warn(f"{split} split: {len(repairs)} sentence(s) with invalid IOB2 (I-X not continuing an X entity), "
                      f"repaired to B-X: {shown}", stacklevel=2)
    return examples
