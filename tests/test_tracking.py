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


def wandb_records(run_file):
    """The records of an offline run file: W&B writes them in LevelDB's log format (a 7-byte file header,
    32 KiB blocks, each record chunk with a crc32/length/type header) as `Record` protocol buffers."""
    import struct

    from wandb.proto.wandb_internal_pb2 import Record

    data, position, pending, records = run_file.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # a block's tail too short for a chunk header is padding
            position += 32768 - position % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        chunk, position = data[position + 7:position + 7 + length], position + 7 + length
        if kind == 0:  # zero padding at the end of the file
            break
        pending = chunk if kind in (1, 2) else pending + chunk  # full/first start, middle/last continue
        if kind in (1, 4):
            record = Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def logged_history(run_dir):
    (offline_run,) = sorted((run_dir / "wandb").glob("offline-run-*"))
    (run_file,) = offline_run.glob("run-*.wandb")
    steps = []
    for record in wandb_records(run_file):
        if record.WhichOneof("record_type") == "history":
            steps.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
    return offline_run.name, steps


def test_wandb_logs_offline_into_its_run_directory_and_closes_the_run(tmp_path, tiny_bert_dir, tiny_sentiment,
                                                                     monkeypatch, capsys):
    pytest.importorskip("wandb", reason="the tracking extra (wandb) is not installed")
    for key in ("WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # anything written to ~/.cache or ~/.config shows up here
    monkeypatch.chdir(tmp_path)  # a run written to the working directory would show up here
    exp = experiment_yaml(tmp_path / "exp.yaml", tiny_bert_dir, tiny_sentiment, {"name": "head"},
                          train={"epochs": 2, "logging_steps": 1, "log_to": ["csv", "wandb"]})
    for out in ("first", "second"):  # the second run of the process must get a W&B run of its own
        assert main(["run", str(exp), "--out", str(tmp_path / out)]) == 0, capsys.readouterr().err
    first, steps = logged_history(tmp_path / "first")
    second, _ = logged_history(tmp_path / "second")
    assert first != second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev.jsonl", "exp.yaml", "first", "second",
                                                          "test.jsonl", "train.jsonl"]
    losses = [s["train/loss"] for s in steps if "train/loss" in s]
    dev = [s["eval/accuracy"] for s in steps if "eval/accuracy" in s]
    assert len(losses) == 6 and all(loss > 0 for loss in losses)  # 10 examples, batch 4, 2 epochs, logging_steps=1
    assert len(dev) == 2  # one dev evaluation per epoch
    best = json.loads((tmp_path / "first" / "metrics.json").read_text())["dev"]["accuracy"]
    assert max(dev) == pytest.approx(best)  # the restored best epoch is one W&B saw
    assert "WANDB_MODE" not in __import__("os").environ  # restored for the next run of this process
