"""The bundled demo data: parseable, balanced, no text repeated across splits."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tunelab.demo import DEMO_SPLITS, demo_data_dir, demo_split_path
from tunelab.errors import DataError

EXPECTED = {"train": 64, "dev": 16, "test": 48}


def _rows(split: str) -> list[dict]:
    lines = demo_split_path(split).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_files_live_in_the_package():
    folder = demo_data_dir()
    assert folder.is_dir()
    assert (folder / "README.md").is_file()
    assert sorted(p.name for p in folder.glob("*.jsonl")) == [f"sentiment_{s}.jsonl" for s in sorted(DEMO_SPLITS)]


@pytest.mark.parametrize("split", DEMO_SPLITS)
def test_split_parses_and_is_balanced(split):
    rows = _rows(split)
    assert len(rows) == EXPECTED[split]
    for row in rows:
        assert set(row) == {"text", "label"}
        assert isinstance(row["text"], str) and 6 <= len(row["text"].split()) <= 25
    counts = Counter(row["label"] for row in rows)
    assert counts == {"positive": EXPECTED[split] // 2, "negative": EXPECTED[split] // 2}


def test_no_duplicate_texts_within_or_across_splits():
    texts = [row["text"].strip().lower() for split in DEMO_SPLITS for row in _rows(split)]
    duplicates = [t for t, n in Counter(texts).items() if n > 1]
    assert not duplicates


def test_unknown_split_is_a_data_error():
    with pytest.raises(DataError, match="train, dev, test"):
        demo_split_path("validation")
