"""Training mechanics: seeds reproduce on CPU, dynamic padding, the best dev state is restored."""

import json

import pytest
import torch

from conftest import experiment_yaml
from tunelab.cli import main
from tunelab.callbacks import BestState
from tunelab.readouts.classification import encode_classification


def test_same_seed_gives_identical_results(tmp_path, tiny_bert_dir, tiny_sentiment, capsys):
    results = []
    for attempt in range(2):
        exp = experiment_yaml(tmp_path / f"e{attempt}.yaml", tiny_bert_dir, tiny_sentiment, {"name": "full"})
        assert main(["run", str(exp), "--out", str(tmp_path / f"r{attempt}")]) == 0
        results.append((tmp_path / f"r{attempt}" / "predictions.jsonl").read_text())
    assert results[0] == results[1]
    out = capsys.readouterr().out  # without a progress bar: one readable line per dev evaluation, no raw dicts
    assert out.count("epoch 1/2  dev: loss ") == 2 and "epoch 2/2  dev: " in out and "{'eval_" not in out


def test_features_are_not_padded(bert_tokenizer):
    examples = [{"text": "short", "label": "a"}, {"text": "a much longer sentence with many words", "label": "b"}]
    features = encode_classification(bert_tokenizer, examples, ["a", "b"], max_length=64)
    assert len(features[0]["input_ids"]) < len(features[1]["input_ids"]) < 64
    assert [f["labels"] for f in features] == [0, 1]


class _State:
    epoch = 1.0


class _Control:
    should_training_stop = False


def test_best_state_restores_best_weights_and_stops_early():
    model = torch.nn.Linear(2, 2)
    best = BestState("accuracy", patience=2)
    control = _Control()
    with torch.no_grad():
        model.weight.fill_(1.0)
    best.on_evaluate(None, _State(), control, model=model, metrics={"eval_accuracy": 0.9})
    for value in (0.5, 0.6):
        with torch.no_grad():
            model.weight.fill_(value)
        best.on_evaluate(None, _State(), control, model=model, metrics={"eval_accuracy": value})
    assert control.should_training_stop and best.stopped_early
    best.restore(model)
    assert torch.all(model.weight == 1.0)
    assert best.best_metrics["accuracy"] == 0.9


def test_a_tie_on_the_metric_goes_to_the_lower_dev_loss():
    model = torch.nn.Linear(2, 2)
    best = BestState("accuracy", patience=2)
    control = _Control()
    for weight, loss in ((1.0, 0.67), (2.0, 0.58), (3.0, 0.60), (4.0, 0.70)):
        with torch.no_grad():
            model.weight.fill_(weight)
        best.on_evaluate(None, _State(), control, model=model, metrics={"eval_accuracy": 0.6875, "eval_loss": loss})
    best.restore(model)
    assert torch.all(model.weight == 2.0) and best.best_metrics["loss"] == 0.58
    assert control.should_training_stop  # two evaluations after the best one without a better score or loss


def test_early_stopping_stops_and_records_the_best_epoch(tmp_path, tiny_bert_dir, tiny_sentiment):
    # lr 1e-30 leaves fp32 weights unchanged (far below their spacing): every dev evaluation ties
    # with the first, so patience 1 must stop training after epoch 2 and keep epoch 1.
    exp = experiment_yaml(
        tmp_path / "e.yaml", tiny_bert_dir, tiny_sentiment, {"name": "head"},
        train={"epochs": 6, "early_stopping_patience": 1, "learning_rate": 1e-30},
    )
    assert main(["run", str(exp), "--out", str(tmp_path / "r")]) == 0
    costs = json.loads((tmp_path / "r" / "costs.json").read_text())
    assert costs["stopped_early"] is True
    assert costs["epochs"] == 2 and costs["best_epoch"] == 1
