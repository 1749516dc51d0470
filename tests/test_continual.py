"""Continual learning: the mechanisms (EWC, replay, LwF) on tiny models, the accuracy matrix and its
transfer figures by hand, a CLI run over three tiny tasks, a sweep with a method axis, bad input."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from conftest import tiny_bert_config, write_jsonl
from tunelab.cli import main
from tunelab.training.continual_matrix import matrix_table, transfer
from tunelab.training.forgetting import ContinualLoss, EwcState, distillation, draw_buffer, fisher_diagonal
from tunelab.training.task_heads import TaskLabels, TaskMaskedModel, encode_task_examples

LABELS = TaskLabels(["a", "b"], [["neg", "pos"], ["x", "y", "z"]])


@pytest.fixture
def masked_bert():
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return TaskMaskedModel(BertForSequenceClassification(tiny_bert_config(num_labels=LABELS.total)), LABELS)


def batch_of(tokenizer, task_index: int, texts: list[str], labels: list[str]) -> dict:
    from transformers import DataCollatorWithPadding

    examples = [{"text": t, "label": l} for t, l in zip(texts, labels)]
    return DataCollatorWithPadding(tokenizer)(encode_task_examples(tokenizer, examples, task_index, LABELS, 32))


def one_by_one(tokenizer, task_index, texts, labels):
    return [batch_of(tokenizer, task_index, [t], [l]) for t, l in zip(texts, labels)]


# --------------------------------------------------------------------------------------------- EWC


def test_fisher_is_non_negative_and_comes_from_the_given_data(masked_bert, bert_tokenizer):
    first = fisher_diagonal(masked_bert, one_by_one(bert_tokenizer, 0, ["good fine", "bad awful"], ["pos", "neg"]))
    again = fisher_diagonal(masked_bert, one_by_one(bert_tokenizer, 0, ["good fine", "bad awful"], ["pos", "neg"]))
    other = fisher_diagonal(masked_bert, one_by_one(bert_tokenizer, 0, ["dull poor", "nice"], ["neg", "neg"]))
    assert all((f >= 0).all() for f in first.values())
    assert all(torch.equal(first[n], again[n]) for n in first)  # eval mode: no dropout noise
    assert any(not torch.allclose(first[n], other[n]) for n in first)
    # task 0's examples never reach task 1's head rows (masked): zero Fisher there
    head = first["model.classifier.weight"]
    assert head[LABELS.rows(1).start:].abs().sum() == 0 and head[:2].abs().sum() > 0


def test_ewc_penalty_is_zero_at_the_anchor_and_grows_quadratically(masked_bert, bert_tokenizer):
    ewc = EwcState(strength=10.0)
    ewc.consolidate(masked_bert, fisher_diagonal(masked_bert, one_by_one(bert_tokenizer, 0, ["good", "bad"], ["pos", "neg"])))
    assert ewc.penalty(masked_bert).item() == 0.0
    weight = masked_bert.model.classifier.weight
    start = weight.detach().clone()
    penalties = []
    for step in (1.0, 2.0):
        with torch.no_grad():
            weight.copy_(start + step * 0.1)
        penalties.append(ewc.penalty(masked_bert).item())
    assert penalties[0] > 0
    assert penalties[1] == pytest.approx(4 * penalties[0], rel=1e-4)  # twice as far: four times the penalty
    with torch.no_grad():
        weight.copy_(start)
    fisher = ewc.fisher["model.classifier.weight"]
    assert ewc.penalty(masked_bert).item() == 0.0 and fisher.sum() > 0


def test_ewc_counts_trainable_parameters_only(masked_bert, bert_tokenizer):
    for name, p in masked_bert.named_parameters():
        p.requires_grad = "classifier" in name  # as a head-only (or LoRA) model change leaves it
    ewc = EwcState(strength=1.0)
    ewc.consolidate(masked_bert, fisher_diagonal(masked_bert, one_by_one(bert_tokenizer, 0, ["good"], ["pos"])))
    assert set(ewc.fisher) == {"model.classifier.weight", "model.classifier.bias"}
    with torch.no_grad():
        masked_bert.model.bert.embeddings.word_embeddings.weight.add_(1.0)  # frozen: not EWC's business
    assert ewc.penalty(masked_bert).item() == 0.0


def test_ewc_penalty_reaches_the_training_loss(masked_bert, bert_tokenizer):
    ewc = EwcState(strength=1e6)
    ewc.consolidate(masked_bert, fisher_diagonal(masked_bert, one_by_one(bert_tokenizer, 0, ["good", "bad"], ["pos", "neg"])))
    wrapped = ContinualLoss(masked_bert, ewc).train()
    batch = batch_of(bert_tokenizer, 1, ["one", "two"], ["x", "z"])
    plain = masked_bert.train()(**batch).loss
    torch.manual_seed(0), masked_bert.eval(), wrapped.eval()
    assert torch.allclose(wrapped(**batch).loss, masked_bert(**batch).loss)  # at the anchor, not training: the same
    with torch.no_grad():
        masked_bert.model.classifier.weight.add_(0.05)
    wrapped.train()
    assert wrapped(**batch).loss.item() > plain.item() + 1.0


# --------------------------------------------------------------------------------------------- replay


def test_replay_buffer_is_deterministic_right_sized_and_from_that_task():
    examples = [{"text": f"t{i}", "label": "a"} for i in range(20)]
    first = draw_buffer(examples, 5, seed=1, task="sst2")
    assert len(first) == 5 and all(e in examples for e in first)
    assert first == draw_buffer(examples, 5, seed=1, task="sst2")
    assert first != draw_buffer(examples, 5, seed=2, task="sst2")
    with pytest.raises(ValueError):
        draw_buffer(examples, 21, seed=1, task="sst2")


# --------------------------------------------------------------------------------------------- LwF


def test_distillation_is_zero_for_the_old_model_and_positive_after_a_change():
    torch.manual_seed(0)
    old = torch.randn(4, 5)
    heads = [slice(0, 2), slice(2, 5)]
    assert distillation(old.clone(), old, heads, 2.0).item() == pytest.approx(0.0, abs=1e-7)
    assert distillation(old + torch.randn(4, 5), old, heads, 2.0).item() > 0
    shifted = old.clone()
    shifted[:, 0:2] += 3.0  # a shift of every logit of a head leaves its softmax unchanged
    assert distillation(shifted, old, heads, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation(old, old, [], 2.0).item() == 0.0


def test_lwf_reads_the_old_heads_the_mask_hides(masked_bert, bert_tokenizer):
    batch = batch_of(bert_tokenizer, 1, ["one", "two"], ["x", "z"])
    masked_bert.eval()
    with torch.no_grad():
        raw = masked_bert.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    wrapped = ContinualLoss(masked_bert, lwf_alpha=1.0, lwf_heads=[slice(0, 2)], lwf_temperature=2.0)
    wrapped.train()
    masked_bert.eval()  # dropout off: the same model as when recorded
    base = masked_bert(**batch).loss
    same = ContinualLoss.forward(wrapped, **batch, lwf_logits=raw).loss
    assert same.item() == pytest.approx(base.item(), abs=1e-5)
    with torch.no_grad():
        masked_bert.model.classifier.weight[:2] += torch.randn(2, masked_bert.model.config.hidden_size)
    changed = ContinualLoss.forward(wrapped, **batch, lwf_logits=raw).loss
    assert changed.item() > masked_bert(**batch).loss.item() + 1e-4  # task b's own loss is untouched by task a's rows


# --------------------------------------------------------------------------------------------- the matrix


def test_transfer_figures_of_a_hand_made_matrix():
    matrix = [[0.5, 0.5, 0.3],   # untrained: b_i
              [0.9, 0.6, 0.4],   # after task 1
              [0.7, 0.8, 0.5],   # after task 2
              [0.6, 0.7, 0.9]]   # after task 3
    figures = transfer(matrix)
    assert figures["average_accuracy"] == pytest.approx((0.6 + 0.7 + 0.9) / 3)
    assert figures["bwt"] == pytest.approx(((0.6 - 0.9) + (0.7 - 0.8)) / 2)
    assert figures["fwt"] == pytest.approx(((0.6 - 0.5) + (0.5 - 0.3)) / 2)
    text = matrix_table(["a", "b", "c"], matrix, "accuracy")
    assert "(untrained)" in text and "BWT -20.0" in text and "90.0" in text
    with pytest.raises(ValueError):
        transfer(matrix[1:])


# --------------------------------------------------------------------------------------------- CLI

WORDS = {"s": (["good fine great", "nice good", "lovely great", "great nice fine", "fine good", "good nice lovely"],
               ["bad awful poor", "poor terrible", "awful dull", "dull poor bad", "terrible bad", "awful poor dull"]),
         "t": (["apple banana", "banana pear", "pear apple fruit", "fruit banana", "apple fruit", "pear fruit"],
               ["car truck", "truck bus road", "bus car", "road truck", "car road bus", "bus truck"]),
         "u": (["red blue", "blue green red", "green red", "blue red", "green blue", "red green"],
               ["one two", "two three", "three one four", "four two", "one four", "two one"])}
NAMES = {"s": ["negative", "positive"], "t": ["fruit", "vehicle"], "u": ["colour", "number"]}


def continual_file(tmp_path, tiny_bert_dir, method="sequential", tasks=("s", "t", "u"), **extra) -> str:
    entries = []
    for name in tasks:
        first, second = WORDS[name]
        rows = [{"text": t, "label": NAMES[name][1]} for t in first] + [{"text": t, "label": NAMES[name][0]} for t in second]
        train = write_jsonl(tmp_path / f"{name}_train.jsonl", rows)
        entries.append({"name": name, "data": {"train": str(train), "test": str(train)}, "task": {"label_names": NAMES[name]}})
    config = {
        "name": "cl", "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(tiny_bert_dir), "max_length": 16},
        "task": {"type": "classification"},
        "data": {"k_shot": 3, "dev_k_shot": 1},
        "strategy": {"name": "full"},
        "train": {"epochs": 2, "batch_size": 4, "learning_rate": 1e-3, "progress_bar": False, "log_to": ["csv"]},
        "metrics": ["accuracy"],
        "tasks": entries,
        "continual": {"method": method, **extra.pop("continual", {})},
    }
    config.update(extra)
    path = tmp_path / "cl.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("method,settings,strategy", [("ewc", {"ewc_lambda": 100.0, "fisher_samples": 3}, "full"),
                                                      ("ewc", {}, "lora"),  # EWC over LoRA's and the head's parameters
                                                      ("replay", {"buffer_size": 2}, "full"), ("lwf", {}, "full")])
def test_cli_continual_run_writes_the_matrix_and_metrics(tmp_path, tiny_bert_dir, capsys, method, settings, strategy):
    path = continual_file(tmp_path, tiny_bert_dir, method, continual=settings, strategy={"name": strategy})
    out = tmp_path / "run"
    assert main(["run", path, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(untrained)" in printed and "BWT" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    summary = metrics["continual"]
    assert summary["tasks"] == ["s", "t", "u"] and summary["method"] == method
    assert len(summary["matrix"]) == 4 and all(len(row) == 3 for row in summary["matrix"])
    assert metrics["test"]["accuracy"] == pytest.approx(sum(summary["matrix"][-1]) / 3)
    assert summary["average_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert set(summary["per_task"]) == {"s", "t", "u"}
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert {json.loads(line)["task"] for line in lines} == {"s", "t", "u"}
    for name in "stu":
        assert (out / "tasks" / name / "metrics.json").is_file() and (out / "tasks" / name / "logs.csv").is_file()
    costs = json.loads((out / "costs.json").read_text())
    assert [t["task"] for t in costs["tasks"]] == ["s", "t", "u"]
    assert costs["eval_examples_per_second"] > 0 and costs["peak_memory_mb"] > 0
    if method == "replay":  # two earlier tasks' buffers join the third task's 6 examples
        assert costs["tasks"][2]["train_tokens"] > costs["tasks"][0]["train_tokens"]


# --------------------------------------------------------------------------------------------- sweep + report


def test_a_sweep_with_a_method_axis_resumes_and_reports_each_matrix(tmp_path, tiny_bert_dir, capsys):
    from tunelab.config import load_experiment
    from tunelab.report import build_report
    from tunelab.sweep import run_sweep

    sweep = {"seeds": [1, 2], "isolation": "none", "save_artifacts": False, "strategies": [
        {"name": "full", "id": "seq", "continual": {"method": "sequential"}},
        {"name": "full", "id": "ewc", "continual": {"method": "ewc", "ewc_lambda": 10.0}}]}
    path = continual_file(tmp_path, tiny_bert_dir, "replay", tasks=("s", "t"), continual={"buffer_size": 2}, sweep=sweep)
    first = run_sweep(load_experiment(path))
    assert (first.ran, first.skipped, first.failed) == (4, 0, [])
    root = first.root
    stored = json.loads((root / "ewc-k3-seed2" / "metrics.json").read_text())["continual"]
    assert stored["method"] == "ewc" and len(stored["matrix"]) == 3
    config = yaml.safe_load((root / "ewc-k3-seed2" / "config.yaml").read_text())
    assert config["continual"] == {**config["continual"], "method": "ewc", "ewc_lambda": 10.0}
    assert "buffer_size" not in json.loads((root / "ewc-k3-seed2" / "cell.json").read_text())["config"]["continual"]

    again = run_sweep(load_experiment(path))
    assert (again.ran, again.skipped) == (0, 4)
    import shutil

    shutil.rmtree(root / "seq-k3-seed1")
    third = run_sweep(load_experiment(path))
    assert (third.ran, third.skipped) == (1, 3)

    report = build_report(root)
    html = report.html.read_text()
    assert "Continual learning" in html and "BWT" in html
    assert {p.name for p in (root / "plots").glob("continual_*.png")} == {"continual_seq-k3.png", "continual_ewc-k3.png"}


# --------------------------------------------------------------------------------------------- bad input


@pytest.fixture
def no_weights(monkeypatch):
    import tunelab.models

    def refuse(head):
        raise AssertionError("model weights were loaded before the error was found")

    monkeypatch.setattr(tunelab.models, "auto_class_for", refuse)


def fails(capsys, args) -> str:
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def line_with(path: str, text: str) -> int:
    return next(n for n, line in enumerate(open(path).read().splitlines(), 1) if text in line)


@pytest.mark.parametrize("edit,key,message", [
    ({"continual": {"method": "replay", "buffer_size": 7}}, "buffer_size", "larger than the training split"),
    ({"continual": {"method": "sequential", "ewc_lambda": 5.0}}, "ewc_lambda", "setting of method ewc"),
    ({"continual": {"method": "forget"}}, "forget", "continual.method"),
    ({"continual": {"method": "ewc", "lamda": 1}}, "lamda", "lamda"),
    ({"strategy": {"name": "zero_shot"}}, "zero_shot", "does not train a classification head"),
    ({"train": {"label_smoothing": 0.1, "epochs": 1}, "continual": {"method": "lwf"}}, "label_smoothing", "label_smoothing"),
])
def test_bad_continual_input_exits_2_naming_key_and_line(tmp_path, tiny_bert_dir, capsys, no_weights, edit, key, message):
    path = continual_file(tmp_path, tiny_bert_dir, **{k: v for k, v in edit.items() if k != "continual"},
                          continual={k: v for k, v in edit.get("continual", {}).items() if k != "method"})
    text = yaml.safe_load(open(path))
    text["continual"]["method"] = edit.get("continual", {}).get("method", "sequential")
    with open(path, "w") as handle:
        yaml.safe_dump(text, handle, sort_keys=False)
    out = tmp_path / "run"
    err = fails(capsys, ["run", path, "--out", str(out)])
    assert message in err and f"line {line_with(path, key)}" in err
    assert not out.exists()


def test_a_task_that_is_not_classification_is_refused(tmp_path, tiny_bert_dir, capsys, no_weights):
    path = continual_file(tmp_path, tiny_bert_dir)
    text = yaml.safe_load(open(path))
    text["tasks"][1]["task"] = {"type": "generation"}
    with open(path, "w") as handle:
        yaml.safe_dump(text, handle, sort_keys=False)
    err = fails(capsys, ["run", path])
    assert "tasks.1 (t)" in err and "classification" in err and f"line {line_with(path, 'type: generation')}" in err


def test_an_unknown_metric_of_one_task_is_refused_before_weights(tmp_path, tiny_bert_dir, capsys, no_weights):
    path = continual_file(tmp_path, tiny_bert_dir)
    text = yaml.safe_load(open(path))
    text["tasks"][2]["metrics"] = ["accuracy", "acuracy"]
    with open(path, "w") as handle:
        yaml.safe_dump(text, handle, sort_keys=False)
    err = fails(capsys, ["run", path])
    assert "acuracy" in err and "tasks.2" in err


def test_a_continual_override_needs_a_continual_experiment(tmp_path, tiny_bert_dir, capsys):
    path = continual_file(tmp_path, tiny_bert_dir, sweep={"strategies": [
        {"name": "full", "id": "bad", "continual": {"method": "replay", "buffer_size": 1, "ewc_lambda": 3.0}}]})
    err = fails(capsys, ["compare", path, "--dry-run"])
    assert "sweep.strategies.0.continual" in err and "ewc_lambda" in err
