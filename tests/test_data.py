"""Data loading and validation: errors name file and line; LM-BFF K-shot sampling."""

import json
import warnings
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


def test_skip_empty_text_leaves_blank_records_out_and_names_them(tmp_path):
    rows = [{"text": "good", "label": "positive"}, {"text": "", "label": "negative"}, {"text": "bad", "label": "negative"},
            {"text": " ", "label": "positive"}, {"text": "fine", "label": "positive"}]
    train, test = jsonl(tmp_path / "train.jsonl", rows), jsonl(tmp_path / "test.jsonl", rows[:3])
    with pytest.raises(DataError, match=r"train.jsonl:2: field 'text' is empty; .* data.skip_empty_text: true"):
        load_splits(DataConfig(train=train, test=test), TASK, seed=1)
    with pytest.warns(UserWarning) as caught:
        splits = load_splits(DataConfig(train=train, test=test, skip_empty_text=True), TASK, seed=1)
    assert [e["text"] for e in splits.train] == ["good", "bad", "fine"] and [e["text"] for e in splits.test] == ["good", "bad"]
    messages = [str(w.message) for w in caught]
    assert any("2 train record(s)" in m and f"{train}:2, {train}:4" in m for m in messages), messages
    assert any("1 test record(s)" in m and f"{test}:2" in m for m in messages), messages


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


# --- CSV / TSV: the csv module reads the file itself ------------------------------------------


def test_csv_values_keep_line_breaks_and_unicode_line_separators(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(
        'text,label\n'
        '"first line\nsecond line",positive\n'      # line 2-3: a quoted line break stays in the value
        'unquoted\u0085nel,negative\n'               # line 4: U+0085 (NEL) ends no row
        '"quoted\u2028ls",positive\n'                # line 5: U+2028 quoted
        'plain\u2028ls and \u0085,negative\n'        # line 6: U+2028 and U+0085 unquoted
        '\n'                                         # line 7: blank
        '"crlf\r\ninside",positive\r\n',             # line 8-9
        encoding="utf-8", newline="",
    )
    records = load_records(str(path))
    assert [r["text"] for r in records] == [
        "first line\nsecond line", "unquoted\u0085nel", "quoted\u2028ls", "plain\u2028ls and \u0085", "crlf\r\ninside"]
    assert [r["_source"].rsplit(":", 1)[1] for r in records] == ["2", "4", "5", "6", "8"]
    assert [e["label"] for e in load_split(str(path), TASK, "t", TASK.label_names)] == [
        "positive", "negative", "positive", "negative", "positive"]


def test_tsv_rows_start_where_their_first_value_is(tmp_path):
    path = tmp_path / "m.tsv"
    path.write_text('text\tlabel\n"two\nlines"\tpositive\nsep\u2028x\tnegative\nbad\tneutral\n', encoding="utf-8")
    records = load_records(str(path))
    assert [r["text"] for r in records] == ["two\nlines", "sep\u2028x", "bad"]
    assert [r["_source"].rsplit(":", 1)[1] for r in records] == ["2", "4", "5"]
    with pytest.raises(DataError, match=r"m.tsv:5: label 'neutral'"):
        load_split(str(path), TASK, "t", TASK.label_names)


def test_csv_row_with_too_few_values_says_so_honestly(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("label,confidence,text\npositive,0.9,fine\nnegative,0.2\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_split(str(path), TASK, "t", TASK.label_names)
    message = str(err.value)
    assert "short.csv:3: field 'text' is missing in this row (the row has 2 values for 3 columns" in message
    assert "fields with a value: label, confidence)" in message and "fields present" not in message


def test_csv_quote_that_never_closes_names_the_row_where_it_opened(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('text,label\nfine,positive\n"never closed,negative\nmore,positive\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"q.csv:3: cannot parse the row that starts on this line \(unexpected end of data\); "
                                        r"check its quotes"):
        load_records(str(path))


def test_null_json_field_is_not_called_missing_while_present(tmp_path):
    path = jsonl(tmp_path / "n.jsonl", [{"text": None, "label": "positive"}])
    with pytest.raises(DataError, match=r"n.jsonl:1: field 'text' is null"):
        load_split(path, TASK, "t", TASK.label_names)


def test_csv_bytes_that_are_not_utf8_name_their_line_deep_in_the_file(tmp_path):
    path = tmp_path / "big.csv"
    rows = b"".join(b"row %d,positive\n" % i for i in range(5000))
    path.write_bytes(b"text,label\n" + rows + b"caf\xe9,negative\n")
    with pytest.raises(DataError, match=r"big.csv:5002: text is not valid UTF-8"):
        load_records(str(path))


def test_jsonl_line_with_a_raw_unicode_line_separator_is_one_record(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_text(json.dumps({"text": "a\u2028b", "label": "positive"}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert [r["text"] for r in load_records(str(path))] == ["a\u2028b"]


# --- hf:NAME:SPLIT without network -------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Any network attempt (a name lookup or a connection) is recorded and refused."""
    import socket

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError("network attempt")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_hf_name_with_offline_mode_fails_at_once_with_a_fix(no_network):
    with pytest.raises(DataError) as err:
        load_records("hf:nobody/no-such-dataset:train")
    message = str(err.value)
    assert "hub is unreachable" in message and "HF_HUB_OFFLINE" in message and "hf:./FOLDER:train" in message
    assert no_network == []


def test_hf_name_with_an_unresolvable_hub_loads_offline(no_network, monkeypatch):
    """Offline mode not set, but the hub's host does not resolve: the load itself runs in offline mode."""
    import datasets.config
    import huggingface_hub.constants

    import tunelab.models

    monkeypatch.setattr(tunelab.models, "hub_reachable", lambda: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(DataError, match="hub is unreachable"):
        load_records("hf:nobody/no-such-dataset:train")
    assert no_network == []
    assert datasets.config.HF_HUB_OFFLINE is False and huggingface_hub.constants.HF_HUB_OFFLINE is False  # restored


def test_hf_missing_local_folder_is_named(tmp_path):
    with pytest.raises(DataError, match="folder ./nowhere not found"):
        load_records("hf:./nowhere:train")


@pytest.mark.parametrize("name, body", [
    ("bom.csv", "text,label\r\ngood film,positive\r\n"),
    ("bom.tsv", "text\tlabel\ngood film\tpositive\n"),
    ("bom.jsonl", '{"text": "good film", "label": "positive"}\n'),
])
def test_a_leading_byte_order_mark_is_not_part_of_the_data(tmp_path, name, body):
    """Excel's "CSV UTF-8" and Notepad start files with U+FEFF; it must not rename the first column."""
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    records = load_records(str(path))
    assert [(r["text"], r["label"]) for r in records] == [("good film", "positive")]
    assert records[0]["_source"].endswith(f"{name}:{2 if name[-4:] in ('.csv', '.tsv') else 1}")


def test_max_test_seed_draws_a_fixed_sample_instead_of_the_first_examples(tmp_path):
    rows = [{"text": f"t{i}", "label": "a" if i < 50 else "b"} for i in range(100)]  # sorted by label, like MR
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.warns(UserWarning, match=r"data.max_test=10 keeps 10 of 100 test examples, and none of class 'b'; "
                                         r"set data.max_test_seed"):
        first = load_splits(DataConfig(test=str(path), max_test=10), TaskConfig(), seed=1).test
    assert [e["text"] for e in first] == [f"t{i}" for i in range(10)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a drawn sample with every class: no warning
        drawn = load_splits(DataConfig(test=str(path), max_test=10, max_test_seed=0), TaskConfig(), seed=1).test
    again = load_splits(DataConfig(test=str(path), max_test=10, max_test_seed=0), TaskConfig(), seed=2).test
    assert drawn == again and len(drawn) == 10  # the run's seed does not change the test sample
    assert {e["label"] for e in drawn} == {"a", "b"}
    order = [int(e["text"][1:]) for e in drawn]
    assert order == sorted(order)  # kept in file order
