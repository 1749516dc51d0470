"""`setfit` on a tiny random encoder: the encoder really trains on pairs, the head is the fitted logistic
regression (saved as numbers, no pickle), a finished run evaluates and predicts the same, bad input exits 2."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from conftest import experiment_yaml, write_jsonl
from tunelab.cli import main
from tunelab.config import validate_experiment
from tunelab.errors import ConfigError
from tunelab.methods import get_strategy
from tunelab.methods.setfit import HEAD_FILE, LogisticHead, SetFitSettings

pytest.importorskip("setfit")


def setfit_strategy(model_dir, **settings):
    config = validate_experiment({"model": {"name": str(model_dir), "max_length": 32},
                                  "strategy": {"name": "setfit", **settings}, "train": {"seed": 3}})
    return get_strategy("setfit").cls(SetFitSettings(**settings), config, ["negative", "positive"])


def test_logistic_head_matches_scikit_learn_for_two_and_three_classes():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    for classes in (["a", "b"], ["a", "b", "c"]):
        x = rng.normal(size=(30, 5))
        y = [classes[i % len(classes)] for i in range(30)]
        model = LogisticRegression(max_iter=1000).fit(x, y)
        head = LogisticHead(list(model.classes_), model.coef_, model.intercept_)
        np.testing.assert_allclose(head.probabilities(x), model.predict_proba(x), rtol=1e-6, atol=1e-9)


def test_fit_trains_the_encoder_on_pairs_and_the_saved_run_predicts_the_same(tmp_path, tiny_bert_dir, tiny_sentiment):
    from tunelab.data import load_splits

    strategy = setfit_strategy(tiny_bert_dir, num_iterations=2, batch_size=4, learning_rate=1e-3)
    splits = load_splits(strategy.experiment.data.model_copy(update=tiny_sentiment), strategy.experiment.task, 3)
    before = strategy.load_body(str(tiny_bert_dir)).encode(["good fine great"], convert_to_numpy=True)
    predictor, costs = strategy.fit(splits, tmp_path)
    after = predictor.body.encode(["good fine great"], convert_to_numpy=True)
    assert not np.allclose(before, after)  # contrastive fine-tuning changed the encoder
    assert costs["train_pairs"] == 2 * 2 * len(splits.train)  # R rounds × (one positive + one negative) per sentence
    assert costs["steps"] == -(-costs["train_pairs"] // 4) and costs["trainable_params"] > 0
    outputs = predictor.predict(splits.test)
    assert all(abs(sum(o["scores"].values()) - 1) < 1e-6 for o in outputs)
    predictor.save(tmp_path / "artifact")
    assert "coef" in json.loads((tmp_path / "artifact" / HEAD_FILE).read_text())
    assert not list((tmp_path / "artifact").rglob("*.pkl")) and not list((tmp_path / "artifact").rglob("*.bin"))
    reloaded = strategy.load(tmp_path / "artifact")
    again = reloaded.predict(splits.test)
    assert [o["prediction"] for o in again] == [o["prediction"] for o in outputs]
    for a, b in zip(outputs, again):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)


def test_setfit_run_evaluate_and_predict_from_the_cli(tmp_path, tiny_bert_dir, tiny_sentiment, capsys):
    exp = experiment_yaml(tmp_path / "exp.yaml", tiny_bert_dir, tiny_sentiment,
                          {"name": "setfit", "num_iterations": 2, "batch_size": 4, "learning_rate": 1e-3})
    out = tmp_path / "run"
    assert main(["run", str(exp), "--out", str(out)]) == 0
    costs = json.loads((out / "costs.json").read_text())
    assert costs["trainable_params"] > 0 and costs["train_seconds"] > 0 and costs["eval_examples_per_second"] > 0
    assert costs["peak_memory_mb"] > 0
    metrics = json.loads((out / "metrics.json").read_text())["test"]
    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", tiny_sentiment["test"]]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["accuracy"] == pytest.approx(metrics["accuracy"])


def test_bad_setfit_input_exits_2_before_any_weight_loads(tmp_path, tiny_bert_dir, tiny_sentiment, capsys, monkeypatch):
    exp = experiment_yaml(tmp_path / "exp.yaml", tiny_bert_dir, tiny_sentiment, {"name": "setfit", "num_iteration": 2})
    assert main(["run", str(exp), "--out", str(tmp_path / "a")]) == 2
    assert "num_iteration" in capsys.readouterr().err
    rows = [{"text": "a", "text_pair": "b", "label": label} for label in ("negative", "positive")]
    pair_file = str(write_jsonl(tmp_path / "pairs.jsonl", rows))
    pair = experiment_yaml(tmp_path / "pair.yaml", tiny_bert_dir, {"train": pair_file, "test": pair_file}, {"name": "setfit"},
                           task={"type": "pair_classification"})
    assert main(["run", str(pair), "--out", str(tmp_path / "b")]) == 2
    assert "task.type=classification" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "setfit", None)  # the optional extra not installed
    exp = experiment_yaml(tmp_path / "exp.yaml", tiny_bert_dir, tiny_sentiment, {"name": "setfit"})
    assert main(["run", str(exp), "--out", str(tmp_path / "c")]) == 2
    assert "pip install 'tunelab[setfit]'" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        setfit_strategy(tiny_bert_dir).check()
