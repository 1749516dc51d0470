"""Data loading and validation: errors name file and line; LM-BFF K-shot sampling."""

import json
from pathlib import Path

import pytest

from tunelab.config import DataConfig, TaskConfig
from tunelab.data import few_shot_splits, load_records, load_split, load_splits
from tunelab.errors import DataError

TASK = TaskConfig(label_names=["negative", "positive"])


def jsonl(path: Path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_records_know_their_line(tmp_path):
    path = jsonl(tmp_path / "a.jsonl", [{"text": "a", "label": "positive"}, {"text": "b", "label": "negative"}])
    assert load_records(path)[1]["_source"].endswith("a.jsonl:2")


def test_invalid_json_names_line(tmp_path):
    path = jsonl(tmp_path / "a.jsonl", [{"text": "a", "label": "positive"}, "{not json"])
    with pytest.raises(DataError, match=r"a.jsonl:2: invalid JSON"):
        load_records(path)


def test_missing_file_and_unsupported_type(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_records(str(tmp_path / "missing.jsonl"))
    (tmp_path / "x.parquet").write_text("")
    with pytest.raises(DataError, match="unsupported file type"):
        load_records(str(tmp_path / "x.parquet"))


def test_missing_field_names_line_and_fields(tmp_path):
    path = jsonl(tmp_path / "a.jsonl", [{"text": "a", "label": "positive"}, {"sentence": "b", "label": "negative"}])
    with pytest.raises(DataError, match=r"a.jsonl:2: missing field 'text' \(fields present: sentence, label\)"):
        load_split(path, TASK, "train", TASK.label_names)


def test_label_outside_label_set(tmp_path):
    path = jsonl(tmp_path / "a.jsonl", [{"text": "a", "label": "positive"}, {"text": "b", "label": "neutral"}])
    with pytest.raises(DataError, match=r"a.jsonl:2: label 'neutral' is not in the label set"):
        load_split(path, TASK, "train", TASK.label_names)


def test_integer_labels_index_label_names(tmp_path):
    path = jsonl(tmp_path / "a.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": 0}])
    assert [e["label"] for e in load_split(path, TASK, "train", TASK.label_names)] == ["positive", "negative"]
    bad = jsonl(tmp_path / "b.jsonl", [{"text": "a", "label": 5}])
    with pytest.raises(DataError, match="outside the label set"):
        load_split(bad, TASK, "train", TASK.label_names)


def test_empty_split_and_empty_text(tmp_path):
    with pytest.raises(DataError, match="test split is empty"):
        load_split(jsonl(tmp_path / "e.jsonl", []), TASK, "test", TASK.label_names)
    with pytest.raises(DataError, match=r"e2.jsonl:1: field 'text' is empty"):
        load_split(jsonl(tmp_path / "e2.jsonl", [{"text": "  ", "label": "positive"}]), TASK, "test", TASK.label_names)


def test_undecodable_text(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "ok", "label": "positive"}\n{"text": "caf\xe9", "label": "positive"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: text is not valid UTF-8"):
        load_records(str(path))
    replaced = jsonl(tmp_path / "r.jsonl", [{"text": "caf\ufffd", "label": "positive"}])
    with pytest.raises(DataError, match="undecodable"):
        load_split(replaced, TASK, "train", TASK.label_names)


def test_duplicates_warn(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", [{"text": "same", "label": "positive"}] * 2)
    with pytest.warns(UserWarning, match="1 duplicate"):
        load_split(path, TASK, "train", TASK.label_names)


def test_csv_and_tsv_with_lines(tmp_path):
    (tmp_path / "a.csv").write_text('text,label\n"hello, world",positive\nbye,negative\n')
    (tmp_path / "a.tsv").write_text("text\tlabel\nhello\tpositive\nbye\tnegatve\n")
    assert [e["text"] for e in load_split(str(tmp_path / "a.csv"), TASK, "t", TASK.label_names)] == ["hello, world", "bye"]
    with pytest.raises(DataError, match=r"a.tsv:3: label 'negatve'"):
        load_split(str(tmp_path / "a.tsv"), TASK, "t", TASK.label_names)


def test_pair_task_needs_second_text(tmp_path):
    task = TaskConfig(type="pair_classification", text_pair_field="hypothesis", label_names=["no", "yes"])
    path = jsonl(tmp_path / "p.jsonl", [{"text": "a", "hypothesis": "b", "label": "yes"}, {"text": "a", "label": "no"}])
    with pytest.raises(DataError, match="p.jsonl:2: missing field 'hypothesis'"):
        load_split(path, task, "train", task.label_names)


def test_hf_datasets_split_from_a_local_folder(tmp_path):
    folder = tmp_path / "hfdata"
    folder.mkdir()
    jsonl(folder / "train.jsonl", [{"text": "a", "label": "positive"}, {"text": "b", "label": "negative"}])
    examples = load_split(f"hf:{folder}:train", TASK, "train", TASK.label_names)
    assert [e["label"] for e in examples] == ["positive", "negative"]
    with pytest.raises(DataError, match="cannot load"):
        load_records(f"hf:{folder}:nosuchsplit")


def pool(n_per_class: int) -> list[dict]:
    return [{"text": f"{label} {i}", "label": label} for label in ("a", "b", "c") for i in range(n_per_class)]


def test_few_shot_counts_disjoint_and_seeded():
    train, dev = few_shot_splits(pool(20), k=4, dev_k=3, seed=1)
    assert sorted(e["label"] for e in train) == ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    assert len(dev) == 9 and not {e["text"] for e in train} & {e["text"] for e in dev}
    assert few_shot_splits(pool(20), 4, 3, seed=1) == (train, dev)
    assert few_shot_splits(pool(20), 4, 3, seed=2)[0] != train


def test_few_shot_too_few_examples():
    with pytest.raises(DataError, match="fewer than k_shot"):
        few_shot_splits(pool(3), k=2, dev_k=2, seed=0)


def test_load_splits_keeps_test_untouched(tmp_path):
    rows = [{"text": f"t{i}", "label": ["negative", "positive"][i % 2]} for i in range(40)]
    data = DataConfig(train=jsonl(tmp_path / "tr.jsonl", rows), test=jsonl(tmp_path / "te.jsonl", rows[:7]), k_shot=4)
    splits = load_splits(data, TASK, seed=3)
    assert len(splits.train) == 8 and len(splits.dev) == 8 and len(splits.test) == 7
    assert [e["text"] for e in splits.test] == [f"t{i}" for i in range(7)]


def test_label_names_inferred_from_train(tmp_path):
    rows = [{"text": "x", "label": "yes"}, {"text": "y", "label": "no"}]
    splits = load_splits(DataConfig(train=jsonl(tmp_path / "tr.jsonl", rows)), TaskConfig(), seed=0)
    assert splits.label_names == ["no", "yes"]
