"""data.test_fraction: without a test file, part of data.train is held out once as the test split; K-shot train,
dev and the unlabelled pool come from the rest, so no seed ever trains or chooses on a test example."""

import json
import warnings
from collections import Counter

import pytest
import yaml

from conftest import experiment_yaml, write_jsonl
from tunelab.cli import main
from tunelab.config import DataConfig, TaskConfig
from tunelab.data import load_splits
from tunelab.data.pool import unlabelled_pool
from tunelab.data.sampling import held_out_count
from tunelab.errors import DataError

TASK = TaskConfig(label_names=["a", "b", "c"])


def rows(counts: dict[str, int]) -> list[dict]:
    return [{"text": f"{label} example {i}", "label": label} for label, n in counts.items() for i in range(n)]


def jsonl(path, records: list[dict]) -> str:
    return str(write_jsonl(path, records))


def texts(examples: list[dict]) -> set[str]:
    return {e["text"] for e in examples}


@pytest.mark.parametrize("size, held", [(0, 0), (1, 0), (2, 1), (3, 1), (10, 2), (13, 3), (100, 20)])
def test_held_out_count_rounds_and_keeps_both_sides_of_every_class(size, held):
    assert held_out_count(size, 0.2) == held


def test_the_held_out_split_is_stratified_in_file_order_and_the_same_for_every_seed(tmp_path):
    data = DataConfig(train=jsonl(tmp_path / "train.jsonl", rows({"a": 20, "b": 10, "c": 5})),
                      test_fraction=0.2, k_shot=2)
    first = load_splits(data, TASK, seed=1)
    assert Counter(e["label"] for e in first.test) == {"a": 4, "b": 2, "c": 1}
    order = [r["text"] for r in rows({"a": 20, "b": 10, "c": 5})]
    assert [e["text"] for e in first.test] == [t for t in order if t in texts(first.test)]
    for seed in range(1, 9):
        splits = load_splits(data, TASK, seed=seed)
        assert splits.test == first.test
        assert not texts(splits.test) & (texts(splits.train) | texts(splits.dev))


def test_k_shot_draws_from_what_the_held_out_split_leaves(tmp_path):
    # class c: 5 examples, 1 held out; K=2 + dev 2 fits the 4 left, K=3 + dev 2 would need the test example too
    train = jsonl(tmp_path / "train.jsonl", rows({"a": 10, "b": 10, "c": 5}))
    assert len(load_splits(DataConfig(train=train, test_fraction=0.2, k_shot=2), TASK, seed=1).train) == 6
    with pytest.raises(DataError, match="class 'c' has 4 training examples"):
        load_splits(DataConfig(train=train, test_fraction=0.2, k_shot=3, dev_k_shot=2), TASK, seed=1)


def test_without_k_shot_the_rest_is_the_training_split(tmp_path):
    splits = load_splits(DataConfig(train=jsonl(tmp_path / "t.jsonl", rows({"a": 10, "b": 10, "c": 10})),
                                    test_fraction=0.3), TASK, seed=0)
    assert len(splits.test) == 9 and len(splits.train) == 21 and not texts(splits.test) & texts(splits.train)


def test_tasks_without_classes_hold_out_a_share_of_all_examples(tmp_path):
    records = [{"text": f"source {i}", "target": f"target {i}"} for i in range(25)]
    data = DataConfig(train=jsonl(tmp_path / "gen.jsonl", records), test_fraction=0.2, k_shot=4, dev_k_shot=4)
    splits = load_splits(data, TaskConfig(type="generation"), seed=3)
    assert len(splits.test) == 5 and not texts(splits.test) & (texts(splits.train) | texts(splits.dev))


def test_the_unlabelled_pool_leaves_the_scored_test_texts_out(tmp_path):
    data = DataConfig(train=jsonl(tmp_path / "train.jsonl", rows({"a": 20, "b": 20, "c": 20})),
                      test_fraction=0.25, k_shot=2)
    splits = load_splits(data, TASK, seed=1)
    pool = unlabelled_pool(data, TASK, splits.train + splits.dev + splits.test, size=1000, seed=1)
    assert len(pool) == 60 - 15 - 6 - 6 and not texts(pool) & texts(splits.test)
    assert all("label" not in record for record in pool)


def test_self_training_and_distillation_pools_leave_out_the_unscored_held_out_examples_too(tmp_path):
    """max_test scores 4 of the 15 held-out examples; a larger max_test would score the other 11, so ipet's and
    distill's pools (both built from `not_for_pool`) must not have trained on them either."""
    from types import SimpleNamespace

    from tunelab.methods.ipet import self_training_pool

    data = DataConfig(train=jsonl(tmp_path / "train.jsonl", rows({"a": 20, "b": 20, "c": 20})),
                      test_fraction=0.25, k_shot=2, max_test=4, max_test_seed=0)
    splits = load_splits(data, TASK, seed=1)
    assert len(splits.test) == 4 and len(splits.held_out) == 15 and texts(splits.test) < texts(splits.held_out)
    experiment = SimpleNamespace(data=data, task=TASK, train=SimpleNamespace(seed=1), source="exp.yaml")
    pool = self_training_pool(experiment, splits, 1000)
    assert len(pool) == 60 - 15 - 6 - 6 and not texts(pool) & texts(splits.held_out)


@pytest.mark.parametrize("data, says", [
    ({"test": "TEST", "test_fraction": 0.2}, "test_fraction holds part of data.train out as the test split, and data.test names"),
    ({"test_fraction": 0.2}, "test_fraction holds part of data.train out as the test split; set data.train"),
    ({"train": "TRAIN", "test_fraction": 1.5}, "test_fraction"),
])
def test_a_test_file_beside_test_fraction_or_no_train_exits_2_naming_the_keys(tmp_path, capsys, tiny_sentiment, data, says):
    files = {"TRAIN": tiny_sentiment["train"], "TEST": tiny_sentiment["test"]}
    given = {key: files.get(value, value) for key, value in data.items()}
    exp = experiment_yaml(tmp_path / "exp.yaml", tmp_path / "no-such-model", {}, {"name": "head"})
    raw = yaml.safe_load(exp.read_text())
    raw["data"] = given
    exp.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert main(["run", str(exp), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert says in err and "exp.yaml" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_every_cell_of_a_sweep_is_scored_on_the_held_out_examples_and_the_report_says_so(tmp_path, tiny_bert_dir):
    records = [{"text": f"{word} {i}", "label": label} for label, word in (("negative", "bad"), ("positive", "good"))
               for i in range(10)]
    data = {"train": jsonl(tmp_path / "all.jsonl", records), "test_fraction": 0.2, "k_shot": 2}
    exp = experiment_yaml(tmp_path / "exp.yaml", tiny_bert_dir, data, {"name": "head"}, train={"epochs": 1},
                          output_dir=str(tmp_path / "runs"), sweep={"seeds": [1, 2], "strategies": ["head"],
                                                                    "isolation": "none"})
    assert main(["compare", str(exp)]) == 0
    held = load_splits(DataConfig(**data), TaskConfig(label_names=["negative", "positive"]), seed=0).test
    assert len(held) == 4
    for seed in (1, 2):
        cell = tmp_path / "runs" / "tiny" / f"head-k2-seed{seed}"
        scored = [json.loads(line)["text"] for line in (cell / "predictions.jsonl").read_text().splitlines()]
        assert scored == [e["text"] for e in held]
    overview = (tmp_path / "runs" / "tiny" / "report.md").read_text()
    assert "train: all.jsonl; test: 20% of all.jsonl, held out (data.test_fraction)" in overview


def test_a_test_file_that_repeats_a_drawn_training_text_is_warned_about_and_a_held_out_split_is_not(tmp_path):
    records = rows({"a": 6, "b": 6, "c": 6})
    train = jsonl(tmp_path / "train.jsonl", records)
    drawn = load_splits(DataConfig(train=train, k_shot=2), TASK, seed=4).train[:2]
    test = jsonl(tmp_path / "test.jsonl", drawn + [{"text": "a new text", "label": "a"}])
    with pytest.warns(UserWarning, match=r"test split: 2 of 3 example\(s\) repeat a text of the train or dev split "
                                         r"\(seed 4\): .*test.jsonl:1 repeats .*train.jsonl:\d+"):
        load_splits(DataConfig(train=train, test=test, k_shot=2), TASK, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_splits(DataConfig(train=train, test_fraction=0.2, k_shot=2), TASK, seed=4)
