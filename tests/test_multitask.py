"""Multi-task fine-tuning on tiny random models: sampling, head isolation, the run layout, sweeps, bad input."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from conftest import experiment_yaml, write_jsonl
from test_bad_config import no_weights, run_fails  # noqa: F401 (no_weights: a fixture)
from tunelab.cli import main
from tunelab.config import load_experiment
from tunelab.errors import ConfigError
from tunelab.report.build import build_report
from tunelab.sweep import run_sweep
from tunelab.training.task_sampling import mixture, task_probabilities

# --------------------------------------------------------------------------------------------- sampling


def test_probabilities_follow_the_documented_formulas():
    sizes = [100, 25, 4]
    assert task_probabilities(sizes, "proportional") == pytest.approx([100 / 129, 25 / 129, 4 / 129])
    assert task_probabilities(sizes, "equal") == pytest.approx([1 / 3] * 3)
    root = [10, 5, 2]  # n^(1/2)
    assert task_probabilities(sizes, "temperature", 2.0) == pytest.approx([r / 17 for r in root])
    assert task_probabilities(sizes, "temperature", 1.0) == pytest.approx(task_probabilities(sizes, "proportional"))


@pytest.mark.parametrize("sampling, temperature", [("proportional", 1.0), ("temperature", 2.0), ("temperature", 5.0),
                                                   ("equal", 1.0)])
def test_drawn_tasks_follow_the_configured_proportions(sampling, temperature):
    sizes = [400, 100, 16]
    p = task_probabilities(sizes, sampling, temperature)
    draws = 40_000
    counts = Counter(task for task, _ in mixture(sizes, p, draws, seed=7))
    for task, share in enumerate(p):
        assert counts[task] / draws == pytest.approx(share, abs=0.01)


def test_each_task_is_walked_through_before_it_repeats_and_the_seed_fixes_the_order():
    sizes, p = [5, 3], [0.5, 0.5]
    order = mixture(sizes, p, 200, seed=1)
    for task, size in enumerate(sizes):
        indices = [i for t, i in order if t == task]
        for start in range(0, len(indices) - size + 1, size):  # every full pass holds each example once
            assert sorted(indices[start : start + size]) == list(range(size))
    assert order == mixture(sizes, p, 200, seed=1) and order != mixture(sizes, p, 200, seed=2)


# --------------------------------------------------------------------------------------------- files


@pytest.fixture
def two_tasks(tmp_path, tiny_sentiment) -> dict:
    """A sentiment task (tiny_sentiment) and a subjectivity task with labels of its own."""
    facts = ["the train leaves at noon", "water boils at a point", "the report has ten pages", "a table has legs",
             "the shop opens daily"]
    views = ["i love this so much", "i hate how it feels", "i think it is wonderful", "i feel it is awful",
             "i adore that idea"]
    rows = [{"sentence": t, "label": "objective"} for t in facts] + [{"sentence": t, "label": "subjective"} for t in views]
    subj = {"train": write_jsonl(tmp_path / "subj_train.jsonl", rows),
            "dev": write_jsonl(tmp_path / "subj_dev.jsonl", rows[:2] + rows[5:7]),
            "test": write_jsonl(tmp_path / "subj_test.jsonl", rows[2:5] + rows[7:])}
    return {"senti": tiny_sentiment, "subj": {k: str(v) for k, v in subj.items()}}


def multitask_yaml(tmp_path: Path, model_dir, tasks: dict, strategy="head", multitask=None, sweep=None,
                   edit=None) -> Path:
    path = experiment_yaml(tmp_path / "exp.yaml", model_dir, {}, {"name": strategy})
    raw = yaml.safe_load(path.read_text())
    raw.pop("data")
    raw["task"].pop("label_names")  # each task's own labels (read from its data)
    raw["output_dir"] = str(tmp_path / "runs")
    raw["tasks"] = [{"name": "senti", "data": tasks["senti"]},
                    {"name": "subj", "data": tasks["subj"], "task": {"text_field": "sentence"}}]
    raw["multitask"] = multitask or {"sampling": "proportional"}
    if sweep is not None:
        raw["train"].update(epochs=1)
        raw["sweep"] = {"isolation": "none", **sweep}
    if edit:
        edit(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def read(path: Path):
    return json.loads(Path(path).read_text())


# --------------------------------------------------------------------------------------------- the run


def test_a_joint_run_writes_per_task_metrics_and_their_mean(tmp_path, tiny_bert_dir, two_tasks, capsys):
    path = multitask_yaml(tmp_path, tiny_bert_dir, two_tasks, multitask={"sampling": "temperature", "temperature": 2})
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "multi-task (one shared model, temperature sampling)" in printed and "  subj: accuracy=" in printed
    metrics = read(out / "metrics.json")
    senti, subj = metrics["tasks"]["senti"], metrics["tasks"]["subj"]
    assert (senti["num_test"], subj["num_test"], metrics["num_test"]) == (4, 6, 10)
    for key in ("accuracy", "f1"):
        assert metrics["test"][key] == pytest.approx((senti["test"][key] + subj["test"][key]) / 2)
    assert set(senti["dev"]) >= {"accuracy", "f1"}
    assert metrics["multitask"]["probabilities"] == pytest.approx({"senti": 0.5, "subj": 0.5})  # 10 and 10 examples
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert Counter(r["task"] for r in rows) == {"senti": 4, "subj": 6}
    assert {r["prediction"] for r in rows if r["task"] == "subj"} <= {"objective", "subjective"}
    assert read(out / "tasks" / "subj" / "metrics.json") == subj
    heads = read(out / "task_heads.json")
    assert heads["rows"] == {"senti": [0, 1], "subj": [2, 3]}
    # a multi-task run directory is refused by evaluate with a pointer to its tasks, not a traceback
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", two_tasks["senti"]["test"]]) == 2
    assert "multi-task run" in capsys.readouterr().err


def test_each_task_alone_leaves_an_ordinary_run_directory_per_task(tmp_path, tiny_bert_dir, two_tasks, capsys):
    path = multitask_yaml(tmp_path, tiny_bert_dir, two_tasks, multitask={"joint": False})
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 0
    metrics = read(out / "metrics.json")
    assert metrics["multitask"]["joint"] is False
    assert metrics["test"]["accuracy"] == pytest.approx(
        (metrics["tasks"]["senti"]["test"]["accuracy"] + metrics["tasks"]["subj"]["test"]["accuracy"]) / 2)
    capsys.readouterr()
    assert main(["evaluate", str(out / "tasks" / "subj"), "--data", two_tasks["subj"]["test"]]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["metrics"]["accuracy"] == pytest.approx(metrics["tasks"]["subj"]["test"]["accuracy"])


def test_joint_pet_reads_each_task_through_its_own_template_and_words(tmp_path, tiny_llama_dir, two_tasks, capsys):
    prompts = [{"template": "{{ text }} It was", "verbalizer": {"negative": " bad", "positive": " good"}},
               {"template": "{{ text }} This is", "verbalizer": {"objective": " fact", "subjective": " opinion"}}]

    def edit(raw):
        raw["strategy"] = {"name": "pet", "train": "lora"}
        for entry, prompt in zip(raw["tasks"], prompts):
            entry["prompt"] = prompt

    path = multitask_yaml(tmp_path, tiny_llama_dir, two_tasks, edit=edit)
    assert main(["prompt", str(path), "--n", "1"]) == 0  # each task's first test prompt, through its template
    shown = capsys.readouterr().out
    assert "[task senti]" in shown and " It was" in shown and "[task subj]" in shown and " This is" in shown
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 0
    metrics = read(out / "metrics.json")
    assert set(metrics["tasks"]) == {"senti", "subj"} and metrics["num_test"] == 10
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert {r["prediction"] for r in rows if r["task"] == "subj"} <= {"objective", "subjective"}
    assert set(rows[-1]["scores"]) == {"objective", "subjective"}
    plan = read(out / "tasks" / "subj" / "prompt.json")
    assert plan["prompt"]["template"] == "{{ text }} This is"


@pytest.mark.parametrize("strategy", ["head", "lora"])
def test_a_task_loss_reaches_only_its_own_head_rows_under_the_strategys_model_change(
        tmp_path, tiny_bert_dir, two_tasks, strategy):
    from transformers import DataCollatorWithPadding

    from tunelab.run import prepare
    from tunelab.training.task_heads import TaskMaskedModel, encode_task_examples

    prepared = prepare(load_experiment(multitask_yaml(tmp_path, tiny_bert_dir, two_tasks, strategy=strategy)))
    joint = prepared.strategy
    loaded = joint.inner.load_base()
    model = TaskMaskedModel(joint.inner.prepare(loaded), joint.task_labels)
    features = encode_task_examples(loaded.tokenizer, joint.runs[1].splits.train, 1, joint.task_labels, 32)
    model.train()
    model(**DataCollatorWithPadding(loaded.tokenizer)(features)).loss.backward()
    heads = [p for name, p in model.named_parameters()
             if p.requires_grad and "classifier" in name and name.endswith("weight") and p.shape[0] == 4]
    assert len(heads) == 1  # the trained output layer (under LoRA: PEFT's trainable copy of it)
    grad = heads[0].grad.abs().sum(1)
    assert (grad[2:] > 0).all() and grad[:2].eq(0).all()


# --------------------------------------------------------------------------------------------- sweeps


def test_single_against_multi_on_the_same_seeds_resumes_like_any_sweep(tmp_path, tiny_bert_dir, two_tasks):
    """Both entries on seeds 1 and 2; the report's per-task table; resume; an edited task file refused."""
    sweep = {"seeds": [1, 2], "strategies": [{"name": "head", "id": "head-multi"},
                                             {"name": "head", "id": "head-single", "multitask": {"joint": False}}]}
    path = multitask_yaml(tmp_path, tiny_bert_dir, two_tasks, sweep=sweep)
    first = run_sweep(load_experiment(path))
    assert (first.ran, first.failed) == (4, [])
    for cell in first.cells:
        metrics = read(first.root / cell.id / "metrics.json")
        assert metrics["multitask"]["joint"] is cell.id.startswith("head-multi")
        assert set(metrics["tasks"]) == {"senti", "subj"} and cell.config["train"]["seed"] in (1, 2)
    again = run_sweep(load_experiment(path))
    assert (again.ran, again.skipped) == (0, 4)
    table = build_report(first.root).markdown.read_text().split("## Per-task results", 1)[1].split("\n## ", 1)[0]
    for row in ("| head-multi-kall | joint | senti |", "| head-single-kall | one per task | subj |"):
        assert row in table
    shutil.rmtree(first.root / "head-single-kall-seed2")
    third = run_sweep(load_experiment(path))
    assert (third.ran, third.skipped) == (1, 3)
    with open(two_tasks["subj"]["train"], "a", encoding="utf-8") as handle:  # one task's data edited
        handle.write(json.dumps({"sentence": "i like it", "label": "subjective"}) + "\n")
    with pytest.raises(ConfigError, match=r"subj:train: the file's content changed"):
        run_sweep(load_experiment(path))


# --------------------------------------------------------------------------------------------- bad input


def line_with(path: Path, text: str) -> int:
    """The last line holding `text` (the tasks come after the shared sections in these files)."""
    return [n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line][-1]


def set_in(raw: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    node[last] = value


@pytest.mark.parametrize("dotted, value, line_text, message", [
    ("multitask.sampling", "by_size", "sampling:", r"multitask\.sampling"),
    ("multitask.head", "shared", "label_names:", r"labels clash in one head.*head: per_task"),
    ("tasks.1.task.type", "generation", "type: generation", r"task\.type=generation in task 'subj'"),
    ("strategy.name", "zero_shot", "name: zero_shot", r"strategy 'zero_shot' does not train a label read-out"),
    ("strategy.name", "pet", "name: subj", r"task 'subj' has no prompt template.*tasks\.1"),
    ("train.label_smoothing", 0.1, "label_smoothing:", r"train\.label_smoothing is not supported with multitask\.joint: true"),
    ("tasks.1.metrics", ["f1"], "metrics:", r"task 'subj' does not measure 'accuracy'"),
])
def test_bad_multitask_input_exits_2_naming_key_and_line(tmp_path, tiny_bert_dir, two_tasks, capsys, no_weights,
                                                         dotted, value, line_text, message):
    def edit(raw):
        set_in(raw, dotted, value)
        if dotted == "multitask.head":
            raw["tasks"][1]["task"]["label_names"] = ["objective", "subjective"]
        if value == "pet":  # the first task has its prompt, the second none
            raw["tasks"][0]["prompt"] = {"template": "{{ text }} It was"}

    path = multitask_yaml(tmp_path, tiny_bert_dir, two_tasks, edit=edit)
    err = run_fails(capsys, tmp_path, ["run", str(path), "--out", str(tmp_path / "run")])  # exit 2, no new file
    assert f"line {line_with(path, line_text)}" in err
    assert re.search(message, err, flags=re.S), err
