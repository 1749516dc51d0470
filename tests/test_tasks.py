"""The `tasks:` list of multi-task and continual experiments: merged per-task experiments, errors with lines."""

from __future__ import annotations

import pytest

from conftest import write_jsonl
from tunelab.config import load_experiment
from tunelab.errors import ConfigError
from tunelab.training.tasks import load_task_splits, task_experiments

EXPERIMENT = """\
name: two
data:
  k_shot: 2
  max_test: 3
task:
  label_names: [negative, positive]
tasks:
  - name: first
    data: {{train: {a_train}, test: {a_test}}}
  - name: second
    data:
      train: {b_train}
      test: {b_test}
      k_shot: 1
    task: {{text_field: sentence, label_names: [obj, subj]}}
    metrics: [accuracy]
{mode}
"""


@pytest.fixture
def two_task_files(tmp_path) -> dict:
    a = [{"text": f"a{i}", "label": ["negative", "positive"][i % 2]} for i in range(12)]
    b = [{"sentence": f"b{i}", "label": ["obj", "subj"][i % 2]} for i in range(12)]
    return {"a_train": write_jsonl(tmp_path / "a_train.jsonl", a), "a_test": write_jsonl(tmp_path / "a_test.jsonl", a),
            "b_train": write_jsonl(tmp_path / "b_train.jsonl", b), "b_test": write_jsonl(tmp_path / "b_test.jsonl", b)}


def write(tmp_path, files, mode="multitask: {sampling: equal}", **replace) -> str:
    text = EXPERIMENT.format(mode=mode, **{k: v.name for k, v in files.items()})
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return str(path)


def test_each_task_merges_its_sections_over_the_shared_ones(tmp_path, two_task_files):
    config = load_experiment(write(tmp_path, two_task_files))
    first, second = task_experiments(config)
    assert (first.name, second.name) == ("first", "second")
    assert first.experiment.data.k_shot == 2 and second.experiment.data.k_shot == 1  # entry beats shared
    assert first.experiment.data.max_test == second.experiment.data.max_test == 3  # shared reaches both
    assert first.experiment.task.text_field == "text" and second.experiment.task.text_field == "sentence"
    assert first.experiment.metrics == ["accuracy", "f1"] and second.experiment.metrics == ["accuracy"]
    assert first.experiment.data.train == str(tmp_path / "a_train.jsonl")  # relative to the experiment file
    assert first.experiment.tasks is None and first.experiment.multitask is None


def test_each_task_loads_its_own_k_shot_splits(tmp_path, two_task_files):
    config = load_experiment(write(tmp_path, two_task_files))
    first, second = load_task_splits(task_experiments(config), seed=1)
    assert len(first.splits.train) == 4 and len(second.splits.train) == 2  # K per class, by task
    assert first.splits.label_names == ["negative", "positive"] and second.splits.label_names == ["obj", "subj"]
    assert {e["text"] for e in second.splits.train} <= {f"b{i}" for i in range(12)}
    assert len(first.splits.test) == 3


def test_a_bad_value_in_a_task_names_the_task_and_its_line(tmp_path, two_task_files):
    path = write(tmp_path, two_task_files, **{"k_shot: 1": "k_shot: 0"})
    with pytest.raises(ConfigError, match=r"line 14.*data\.k_shot") as err:
        task_experiments(load_experiment(path))
    assert "tasks.1: second" in str(err.value)


@pytest.mark.parametrize("mode, message", [
    ("", "neither `multitask:` nor `continual:`"),
    ("multitask: {}\ncontinual: {}", "either multi-task or continual"),
])
def test_task_list_needs_exactly_one_way_to_learn_it(tmp_path, two_task_files, mode, message):
    with pytest.raises(ConfigError, match=message):
        task_experiments(load_experiment(write(tmp_path, two_task_files, mode=mode)))


def test_task_names_must_differ(tmp_path, two_task_files):
    with pytest.raises(ConfigError, match=r"line 10.*'first' is already the name of tasks\.0"):
        task_experiments(load_experiment(write(tmp_path, two_task_files, **{"name: second": "name: first"})))


def test_multitask_without_tasks_says_what_is_missing(tmp_path, tiny_sentiment):
    path = tmp_path / "exp.yaml"
    path.write_text(f"data: {{train: {tiny_sentiment['train']}, test: {tiny_sentiment['test']}}}\ncontinual: {{method: ewc}}\n")
    with pytest.raises(ConfigError, match=r"line 2: continual: needs a `tasks:` list"):
        task_experiments(load_experiment(path))
