"""The held-out dev score: each dev example scored by a checkpoint chosen on the other folds of dev, so a strategy
that keeps its best epoch is compared by a score that choice has not seen (tunelab.held_out_dev)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from conftest import experiment_yaml, write_jsonl
from tunelab.cli import main
from tunelab.held_out_dev import FOLDS, DevHistory, DevReadout, stratified_folds

LABELS = ["negative", "positive"]


def accuracy(probabilities: np.ndarray, gold: np.ndarray) -> dict:
    return {"accuracy": float((probabilities.argmax(-1) == gold).mean())}


def history_of(evaluations: list[list[int]], gold: list[int]) -> DevHistory:
    """A history whose evaluation e predicts label evaluations[e][i] for example i (one-hot distributions)."""
    readout = DevReadout(lambda predictions, label_ids: (predictions, label_ids), accuracy, LABELS)
    history = DevHistory(readout)
    for predicted in evaluations:
        history.record(np.eye(2)[predicted], np.asarray(gold))
    history.epochs = [float(e + 1) for e in range(len(evaluations))]
    return history


def test_each_fold_is_scored_by_the_evaluation_the_other_folds_chose():
    """Evaluation e is right exactly on fold e: on the other folds every evaluation but e looks best (and a tie
    goes to the later one), so each fold is scored by an evaluation that is wrong on it."""
    gold = np.array([0, 1] * 10)
    fold = stratified_folds(gold, seed=13, folds=FOLDS)
    evaluations = [np.where(fold == e, gold, 1 - gold).tolist() for e in range(FOLDS)]
    held = history_of(evaluations, gold.tolist()).held_out("accuracy", seed=13)
    # on the whole dev split every evaluation scores 0.1 and the kept one would report it; out of fold, none is right
    assert held.metrics == {"accuracy": 0.0}
    assert held.chosen_epochs == [10.0] * 9 + [9.0]  # fold 9 alone sees evaluation 10 wrong everywhere
    assert (held.probabilities.argmax(-1) == 1 - gold).all() and (held.fold == fold).all()


def test_an_evaluation_best_everywhere_keeps_its_own_score():
    gold = [0, 0, 0, 1, 1, 1]
    noisy, better = [1, 0, 1, 1, 0, 1], [0, 0, 1, 1, 1, 1]
    held = history_of([noisy, better, noisy], gold).held_out("accuracy", seed=1)
    assert held.metrics["accuracy"] == pytest.approx(5 / 6)
    assert held.chosen_epochs == [2.0] * 6  # six examples: six folds of one, each choosing evaluation 2


def test_a_tie_on_the_other_folds_goes_to_the_later_evaluation():
    gold = [0, 1, 0, 1]
    held = history_of([[0, 1, 0, 1], [0, 1, 0, 1]], gold).held_out("accuracy", seed=0)
    assert held.chosen_epochs == [2.0] * 4


def test_one_evaluation_has_no_choice_to_hold_out():
    assert history_of([[0, 1]], [0, 1]).held_out("accuracy", seed=0) is None


@pytest.mark.parametrize("seed", [0, 13, 42])
def test_folds_spread_every_label_and_are_fixed_by_the_seed(seed):
    gold = np.array([0] * 15 + [1] * 17 + [2] * 4)
    fold = stratified_folds(gold, seed, FOLDS)
    assert (fold == stratified_folds(gold, seed, FOLDS)).all()
    sizes = np.bincount(fold, minlength=FOLDS)
    assert sizes.max() - sizes.min() <= 1
    for label in (0, 1, 2):
        per_fold = np.bincount(fold[gold == label], minlength=FOLDS)
        assert per_fold.max() - per_fold.min() <= 1
    assert not (fold == stratified_folds(gold, seed + 1, FOLDS)).all()


def test_a_run_is_compared_by_its_held_out_dev_score(tmp_path, tiny_bert_dir, tiny_sentiment):
    exp = experiment_yaml(tmp_path / "e.yaml", tiny_bert_dir, tiny_sentiment, {"name": "full"}, train={"epochs": 3})
    assert main(["run", str(exp), "--out", str(tmp_path / "r")]) == 0
    run = tmp_path / "r"
    metrics, costs = (json.loads((run / name).read_text()) for name in ("metrics.json", "costs.json"))
    record = json.loads((run / "held_out_dev.json").read_text())
    assert metrics["dev"] == costs["held_out_dev"] == record["metrics"]
    assert metrics["dev_kept_checkpoint"] == costs["best_dev"]
    assert record["evaluated_epochs"] == [1.0, 2.0, 3.0]
    assert len(record["chosen_epochs"]) == len(set(record["fold_of_example"])) and set(record["chosen_epochs"]) <= {1.0, 2.0, 3.0}
    assert len(record["evaluations"]) == 3
    # the score is that of the stored out-of-half distributions on the dev labels
    dev = [json.loads(line) for line in open(tiny_sentiment["dev"], encoding="utf-8")]
    predicted = [record["label_names"][int(np.argmax(p))] for p in record["probabilities"]]
    assert len(predicted) == len(dev) == len(record["fold_of_example"])
    assert metrics["dev"]["accuracy"] == pytest.approx(np.mean([p == d["label"] for p, d in zip(predicted, dev)]))


def test_one_epoch_keeps_the_plain_dev_score(tmp_path, tiny_bert_dir, tiny_sentiment):
    exp = experiment_yaml(tmp_path / "e.yaml", tiny_bert_dir, tiny_sentiment, {"name": "head"}, train={"epochs": 1})
    assert main(["run", str(exp), "--out", str(tmp_path / "r")]) == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["dev"] and "dev_kept_checkpoint" not in metrics
    assert not (tmp_path / "r" / "held_out_dev.json").exists()


def test_pet_with_demonstration_sets_holds_out_one_distribution_per_dev_example(tmp_path, llama_dir):
    from tunelab.demo import demo_data_dir

    demo = demo_data_dir()
    raw = {
        "model": {"name": str(llama_dir), "max_length": 128},
        "task": {"type": "classification", "label_names": LABELS},
        "data": {"train": str(demo / "sentiment_train.jsonl"), "test": str(demo / "sentiment_test.jsonl"),
                 "k_shot": 4, "max_test": 4},
        "strategy": {"name": "pet", "demonstrations": {"per_label": 1, "test_sets": 3}},
        "prompt": {"template": "Review: {{ text }}\nSentiment:", "verbalizer": {"negative": " bad", "positive": " good"}},
        "train": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "log_to": [], "progress_bar": False, "seed": 13},
        "metrics": ["accuracy"],
    }
    path = tmp_path / "pet.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 0
    record = json.loads((tmp_path / "r" / "held_out_dev.json").read_text())
    assert len(record["probabilities"]) == 8  # K = 4 per label on dev: 8 examples, not 3 sets × 8 rows
    from tunelab.config import validate_experiment
    from tunelab.run import prepare

    dev = prepare(validate_experiment(raw)).splits.dev
    assert record["gold"] == [LABELS.index(e["label"]) for e in dev]  # each set's rows line up with the dev split
    assert all(sum(p) == pytest.approx(1.0, abs=1e-5) for p in record["probabilities"])


def test_a_sweep_cell_keeps_the_held_out_outputs_as_its_dev_predictions(tmp_path, tiny_bert_dir, tiny_sentiment):
    path = experiment_yaml(tmp_path / "e.yaml", tiny_bert_dir, tiny_sentiment, {"name": "full"}, train={"epochs": 3})
    raw = yaml.safe_load(path.read_text())
    raw["output_dir"] = str(tmp_path / "runs")
    raw["sweep"] = {"isolation": "none", "seeds": [1], "save_artifacts": False, "strategies": ["full"]}
    path.write_text(yaml.safe_dump(raw))
    assert main(["compare", str(path)]) == 0
    cell = next(p for p in (tmp_path / "runs" / "tiny").iterdir() if p.name.startswith("full-"))
    record = json.loads((cell / "held_out_dev.json").read_text())
    rows = [json.loads(line) for line in (cell / "dev_predictions.jsonl").read_text().splitlines()]
    stored = [r["scores"][label] for r in rows for label in record["label_names"]]
    assert stored == pytest.approx([p for row in record["probabilities"] for p in row], abs=1e-6)
    accuracy_of_rows = np.mean([r["prediction"] == r["label"] for r in rows])
    assert json.loads((cell / "metrics.json").read_text())["dev"]["accuracy"] == pytest.approx(accuracy_of_rows)


def test_dev_predictions_keep_the_dev_splits_order_under_length_grouping(tmp_path, tiny_bert_dir, tiny_sentiment):
    """train.group_by_length (the default) made the Trainer length-group the dev batches too: predictions came back
    longest first, so anything lining them up with the dev split (pet's demonstration sets, this record) mixed up
    examples. Dev rows of very different lengths, in an order that length sorting changes, must stay in order."""
    words = ["good", "bad"]
    dev = [{"text": " ".join([words[i % 2]] * (1 + (i * 7) % 11)), "label": LABELS[1 - i % 2]} for i in range(10)]
    data = dict(tiny_sentiment, dev=str(write_jsonl(tmp_path / "dev_lengths.jsonl", dev)))
    exp = experiment_yaml(tmp_path / "e.yaml", tiny_bert_dir, data, {"name": "full"}, train={"epochs": 2})
    assert main(["run", str(exp), "--out", str(tmp_path / "r")]) == 0
    record = json.loads((tmp_path / "r" / "held_out_dev.json").read_text())
    assert record["gold"] == [LABELS.index(e["label"]) for e in dev]
