"""Several processes: the same `tunelab run` command under `torchrun` and `accelerate launch`.

The end-to-end tests start two ranks on CPU (DDP over gloo), prove both ran (two ranks, two pids,
the same number of optimiser steps as one process: the global batch is split, not doubled), and
show the two-process run reaches the metrics of the one-process run within a stated tolerance:
|Δ test accuracy| ≤ 0.05 (2 of the 48 demo test sentences) and |Δ mean train loss| ≤ 0.05.
They are not bit-identical: each rank draws its own dropout masks and sums in another order.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import cpu_only_env
from tunelab.demo import demo_split_path

ACCURACY_TOLERANCE = 0.05
LOSS_TOLERANCE = 0.05


# ---------------------------------------------------------------------------------------------
# Mechanics (tiny model, in process)


def test_classification_loss_is_not_scaled_by_accumulation(tmp_path, bert_tokenizer):
    """The logged loss of one accumulated step is the batch mean, as with no accumulation.

    transformers' Trainer believes classification models normalise by `num_items_in_batch` and
    then neither divides by the accumulation steps nor stops multiplying by the process count;
    `train_model` turns that off. Without it the logged loss here is twice the mean.
    """
    from transformers import BertForSequenceClassification

    from conftest import tiny_bert_config
    from tunelab.config import TrainConfig
    from tunelab.readouts.classification import encode_classification
    from tunelab.train import loss_honours_item_count, train_model

    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    examples = [{"text": f"sentence number {i} " * (1 + i % 3), "label": "ab"[i % 2]} for i in range(8)]
    features = encode_classification(bert_tokenizer, examples, ["a", "b"], max_length=32)
    with torch.no_grad():
        batch = bert_tokenizer([e["text"] for e in examples], padding=True, return_tensors="pt")
        expected = model(**batch, labels=torch.tensor([i % 2 for i in range(8)])).loss.item()
    cfg = TrainConfig(epochs=1, batch_size=4, gradient_accumulation_steps=2, learning_rate=1e-12,
                      logging_steps=1, log_to=["csv"], progress_bar=False, eval_strategy="no", group_by_length=False)
    no_dev = encode_classification(bert_tokenizer, [], ["a", "b"], max_length=32)  # a run without a dev split
    train_model(model, bert_tokenizer, features, no_dev, cfg, tmp_path, score_dev=None, metric_for_best="accuracy")

    assert not loss_honours_item_count(model)
    logged = [float(row["loss"]) for row in csv.DictReader(open(tmp_path / "logs.csv")) if row.get("loss")]
    assert logged[0] == pytest.approx(expected, rel=1e-3)


def test_causal_lm_keeps_token_count_normalisation(tiny_llama_lm):
    from tunelab.train import loss_honours_item_count

    assert loss_honours_item_count(tiny_llama_lm)


# ---------------------------------------------------------------------------------------------
# End to end: real MiniLM, demo data, one process vs two


def write_experiment(path: Path) -> Path:
    import yaml

    config = {
        "name": "ddp",
        "model": {"name": "minilm-l6", "max_length": 32},
        "task": {"type": "classification", "label_names": ["negative", "positive"]},
        "data": {split: str(demo_split_path(split)) for split in ("train", "dev", "test")},
        "strategy": {"name": "full"},
        "train": {"learning_rate": 2e-4, "epochs": 3, "batch_size": 8, "progress_bar": False, "log_to": ["csv"]},
        "metrics": ["accuracy"],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def launch(prefix: list[str], experiment: Path, out: Path) -> dict:
    """Run `tunelab run` behind a launcher prefix; return the run's metrics, costs and mean train loss."""
    # One thread per process: torchrun's own default for its ranks, also given to the single
    # process so that both sides compute alike and the 2-core machine is not oversubscribed.
    env = cpu_only_env(OMP_NUM_THREADS="1")
    command = prefix + ["-m", "tunelab.cli", "run", str(experiment), "--out", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    rows = list(csv.DictReader(open(out / "logs.csv")))
    return {
        "metrics": json.loads((out / "metrics.json").read_text()),
        "costs": json.loads((out / "costs.json").read_text()),
        "train_loss": next(float(r["train_loss"]) for r in rows if r.get("train_loss")),
        "stdout": done.stdout,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    return write_experiment(tmp_path_factory.mktemp("ddp") / "experiment.yaml")


@pytest.fixture(scope="module")
def one_process(experiment) -> dict:
    return launch([sys.executable], experiment, experiment.parent / "one")


def assert_two_ranks_match(run: dict, single: dict, out: Path) -> None:
    costs = run["costs"]
    assert costs["world_size"] == 2
    ranks = costs["ranks"]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    assert len({r["pid"] for r in ranks}) == 2
    # The global batch is split across ranks: each rank takes the one-process run's steps.
    assert [r["steps"] for r in ranks] == [single["costs"]["steps"]] * 2
    assert run["stdout"].count("run directory:") == 1  # only rank 0 reports and writes
    assert not list(out.parent.glob(f".{out.name}*.partial"))
    accuracy, single_accuracy = run["metrics"]["test"]["accuracy"], single["metrics"]["test"]["accuracy"]
    assert single_accuracy > 0.7  # the runs really learn, so agreeing means something
    assert abs(accuracy - single_accuracy) <= ACCURACY_TOLERANCE
    assert abs(run["train_loss"] - single["train_loss"]) <= LOSS_TOLERANCE


@pytest.mark.e2e
def test_torchrun_two_ranks_match_one_process(experiment, one_process):
    assert one_process["costs"]["world_size"] == 1
    out = experiment.parent / "torchrun"
    run = launch([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone"], experiment, out)
    assert_two_ranks_match(run, one_process, out)


@pytest.mark.e2e
def test_accelerate_launch_two_ranks_match_one_process(experiment, one_process):
    # `--multi_gpu` is accelerate's torchrun-based multi-process launcher; on a CPU-only machine it
    # starts the ranks over gloo. (`--cpu --num_processes 2` starts a single process.)
    out = experiment.parent / "accelerate"
    prefix = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(free_port())]
    run = launch(prefix, experiment, out)
    assert_two_ranks_match(run, one_process, out)


def test_leave_process_group_destroys_the_group_and_is_a_no_op_without_one(tmp_path):
    import torch.distributed as dist

    from tunelab.distributed import leave_process_group

    leave_process_group()  # one process, no group: nothing to do
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert dist.is_initialized()
        leave_process_group()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
