"""train.log_to: mlflow — through the Trainer's own MLflow integration, into a file store inside the run
directory (nothing outside the output directory the user chose), read back with MLflow's own API."""

from __future__ import annotations

import json

import pytest

from conftest import experiment_yaml
from tunelab.cli import main

mlflow = pytest.importorskip("mlflow", reason="the tracking extra (mlflow-skinny) is not installed")


def logged_runs(store):
    import os

    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's opt-in to read a file store

    client = MlflowClient(tracking_uri=store.as_uri())
    runs = [run for experiment in client.search_experiments() for run in client.search_runs([experiment.experiment_id])]
    return client, runs


def test_a_run_logs_its_metrics_to_a_file_store_in_its_run_directory(tmp_path, tiny_bert_dir, tiny_sentiment,
                                                                      monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.chdir(tmp_path)  # a store written to the working directory would show up here
    exp = experiment_yaml(tmp_path / "exp.yaml", tiny_bert_dir, tiny_sentiment, {"name": "head"},
                          train={"epochs": 2, "logging_steps": 1, "log_to": ["csv", "mlflow"]})
    assert main(["run", str(exp), "--out", str(tmp_path / "run")]) == 0, capsys.readouterr().err
    store = tmp_path / "run" / "mlruns"
    client, runs = logged_runs(store)
    assert len(runs) == 1 and runs[0].info.run_name == "run" and runs[0].info.status == "FINISHED"
    run_id = runs[0].info.run_id
    losses = client.get_metric_history(run_id, "loss")
    dev = client.get_metric_history(run_id, "eval_accuracy")
    assert len(losses) >= 2 and all(m.value > 0 for m in losses)  # logging_steps=1: one loss per step
    assert len(dev) == 2  # one dev evaluation per epoch
    best = json.loads((tmp_path / "run" / "metrics.json").read_text())["dev"]["accuracy"]
    assert max(m.value for m in dev) == pytest.approx(best)  # the restored best epoch is one MLflow saw
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()
    assert "MLFLOW_TRACKING_URI" not in __import__("os").environ  # restored for the next run of this process


def test_a_tracking_uri_the_user_set_is_respected(tmp_path, tiny_bert_dir, tiny_sentiment, monkeypatch, capsys):
    mine = tmp_path / "my-store"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mine.as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    exp = experiment_yaml(tmp_path / "exp.yaml", tiny_bert_dir, tiny_sentiment, {"name": "head"},
                          train={"epochs": 1, "log_to": ["mlflow"]})
    assert main(["run", str(exp), "--out", str(tmp_path / "run")]) == 0, capsys.readouterr().err
    assert not (tmp_path / "run" / "mlruns").exists()
    client, runs = logged_runs(mine)
    assert len(runs) == 1 and client.get_metric_history(runs[0].info.run_id, "eval_accuracy")


def test_mlflow_without_the_client_is_a_config_error_naming_the_key(tmp_path, tiny_bert_dir, tiny_sentiment,
                                                                     monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    exp = experiment_yaml(tmp_path / "exp.yaml", tiny_bert_dir, tiny_sentiment, {"name": "head"},
                          train={"log_to": ["mlflow"]})
    assert main(["run", str(exp), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "train.log_to" in err and "tunelab[tracking]" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
