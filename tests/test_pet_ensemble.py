"""`pet_ensemble` (PET's patterns, averaged) and `ipet` (the ensemble labels an unlabelled pool, a new
pet model trains on it) on a tiny random Llama: averaging, the pool's provenance, the targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import write_jsonl
from tunelab.config import validate_experiment
from tunelab.data.loaders import load_records
from tunelab.demo import demo_data_dir
from tunelab.errors import ConfigError
from tunelab.methods.pet_ensemble import encode_members
from tunelab.prompts import example_text
from tunelab.run import execute, load_run, prepare

PATTERNS = [{"template": "Review: {{ text }}\nSentiment:"},
            {"template": "{{ text }} All in all, it was", "verbalizer": {"negative": " awful", "positive": " fine"}}]


def experiment(model_dir: Path, strategy: dict, test: str | None = None):
    demo = demo_data_dir()
    raw = {
        "model": {"name": str(model_dir), "max_length": 64},
        "task": {"type": "classification", "label_names": ["negative", "positive"]},
        "data": {"train": str(demo / "sentiment_train.jsonl"), "test": test or str(demo / "sentiment_test.jsonl"),
                 "k_shot": 4, "max_test": 6},
        "strategy": strategy,
        "prompt": {"template": "Review: {{ text }}\nSentiment:", "verbalizer": {"negative": " bad", "positive": " good"}},
        "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "log_to": [], "progress_bar": False, "seed": 13},
        "metrics": ["accuracy"],
    }
    return validate_experiment(raw)


def test_ensemble_averages_its_members_each_reading_its_own_pattern_and_reloads(llama_dir, tmp_path):
    config = experiment(llama_dir, {"name": "pet_ensemble", "patterns": PATTERNS, "train": "lora", "delta": {"r": 2}})
    run_dir = tmp_path / "run"
    execute(prepare(config), run_dir)
    assert sorted(p.name for p in (run_dir / "ensemble").iterdir()) == ["0", "1"]
    costs = json.loads((run_dir / "costs.json").read_text())
    assert len(costs["members"]) == 2 and "accuracy" in costs["best_dev"]
    saved = [json.loads(line)["scores"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    _, _, predictor = load_run(run_dir)
    test = prepare(config).splits.test
    members = torch.stack([m.label_probs(test) for m in predictor.members])  # (2, N, L)
    assert not torch.allclose(members[0], members[1])
    for row, out, before in zip(members.mean(0), predictor.predict(test), saved):
        assert [out["scores"]["negative"], out["scores"]["positive"]] == pytest.approx(row.tolist(), abs=1e-6)
        assert out["scores"] == pytest.approx(before, abs=1e-5)  # reloaded members predict as in the run
    first, second = (m.strategy for m in predictor.members)
    tokenizer = first.engine.tokenizer
    text = tokenizer.decode(second.encode(second.plan(), test[:1], "test")[0]["input_ids"], skip_special_tokens=True)
    assert text.endswith("all in all, it was")
    assert second.plan().verbalizer == {"negative": [" awful"], "positive": [" fine"]}
    assert first.plan().verbalizer == {"negative": [" bad"], "positive": [" good"]}


def test_the_ensembles_dev_score_is_held_out_from_its_members_epoch_choices(llama_dir, tmp_path):
    """Each member keeps its best epoch on dev; the ensemble is compared by the mean of the members' out-of-half
    distributions (tunelab.held_out_dev), not by the averaged kept checkpoints scored on the dev they were chosen on."""
    import numpy as np

    config = experiment(llama_dir, {"name": "pet_ensemble", "patterns": PATTERNS, "train": "lora", "delta": {"r": 2}})
    config = config.model_copy(update={"train": config.train.model_copy(update={"epochs": 2})})
    run_dir = tmp_path / "run"
    execute(prepare(config), run_dir)
    members = [json.loads((run_dir / "members" / str(i) / "held_out_dev.json").read_text()) for i in (0, 1)]
    record = json.loads((run_dir / "held_out_dev.json").read_text())
    mean = np.mean([np.asarray(m["probabilities"]) for m in members], axis=0)
    assert np.allclose(record["probabilities"], mean, atol=1e-5)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    dev = prepare(config).splits.dev
    predicted = [record["label_names"][int(np.argmax(p))] for p in record["probabilities"]]
    assert metrics["dev"]["accuracy"] == pytest.approx(np.mean([p == e["label"] for p, e in zip(predicted, dev)]))
    assert metrics["dev_kept_checkpoint"] == json.loads((run_dir / "costs.json").read_text())["best_dev"]


def test_unlabelled_pool_drops_labels_and_excludes_the_k_shot_splits_and_test(llama_dir):
    from tunelab.methods.ipet import self_training_pool

    prepared = prepare(experiment(llama_dir, {"name": "pet"}))
    splits = prepared.splits
    pool = self_training_pool(prepared.config, splits, 1000)
    assert pool and all("label" not in e for e in pool)
    taken = {example_text(e) for split in (splits.train, splits.dev, splits.test) for e in split}
    assert not taken & {example_text(e) for e in pool}
    train_file = {r["text"] for r in load_records(prepared.config.data.train)}
    assert {e["text"] for e in pool} == train_file - taken  # the rest of the training file, nothing else
    assert [e["text"] for e in self_training_pool(prepared.config, splits, 5)] == \
           [e["text"] for e in self_training_pool(prepared.config, splits, 5)]


def ipet_fit(llama_dir, tmp_path, monkeypatch, name: str, test: str | None = None, **settings):
    """Fit ipet; returns (prepared, captured final training features, the ensemble's pool distributions, run dir)."""
    from tunelab.methods import pet_ensemble
    from tunelab.methods.pet import PetStrategy

    captured = {}
    original_train_on, original_probs = PetStrategy.train_on, pet_ensemble.EnsemblePredictor.label_probs

    def spy_train_on(self, plan, train, dev, run_dir, epochs=None):
        if Path(run_dir).name == "final":
            captured["train"] = train
        return original_train_on(self, plan, train, dev, run_dir, epochs)

    def spy_probs(self, examples):
        probs = original_probs(self, examples)
        captured["pool"] = (examples, probs)  # the ensemble's last call (after dev) labels the pool
        return probs

    monkeypatch.setattr(PetStrategy, "train_on", spy_train_on)
    monkeypatch.setattr(pet_ensemble.EnsemblePredictor, "label_probs", spy_probs)
    prepared = prepare(experiment(llama_dir, {"name": "ipet", "patterns": PATTERNS, "pool_size": 12, **settings}, test))
    run_dir = tmp_path / name
    run_dir.mkdir()
    predictor, costs = prepared.strategy.fit(prepared.splits, run_dir)
    return prepared, captured, costs, run_dir, predictor


def test_ipet_final_model_trains_on_gold_k_shot_plus_the_ensemble_soft_labels(llama_dir, tmp_path, monkeypatch):
    prepared, captured, costs, run_dir, predictor = ipet_fit(llama_dir, tmp_path, monkeypatch, "soft")
    pool, probs = captured["pool"]
    assert len(pool) == 12 and all("label" not in e for e in pool)
    train = captured["train"]
    k_shot = len(prepared.splits.train)
    gold = [f["labels"] for f in train[:k_shot]]
    names = prepared.strategy.label_names
    assert gold == [[float(names[j] == e["label"]) for j in range(2)] for e in prepared.splits.train]
    targets = torch.tensor([f["labels"] for f in train[k_shot:]])
    assert torch.allclose(targets, probs, atol=1e-6)  # soft: the ensemble's distributions, not the file's labels
    rows = [json.loads(line) for line in (run_dir / "pseudo_labels.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == [e["text"] for e in pool] and all("label" not in r for r in rows)
    assert costs["pool"]["size"] == 12 and costs["pool"]["kept"] == 12 and "accuracy" in costs["ensemble_dev"]

    # No test label is read: with the test labels flipped, the same pool, pseudo-labels and test scores.
    original = load_records(str(demo_data_dir() / "sentiment_test.jsonl"))
    flipped = [{"text": r["text"], "label": "negative" if r["label"] == "positive" else "positive"} for r in original]
    flipped_file = write_jsonl(tmp_path / "flipped.jsonl", flipped)
    again, _, _, again_dir, again_predictor = ipet_fit(llama_dir, tmp_path, monkeypatch, "flipped", str(flipped_file))
    assert (again_dir / "pseudo_labels.jsonl").read_text() == (run_dir / "pseudo_labels.jsonl").read_text()
    assert [e["label"] for e in again.splits.test] != [e["label"] for e in prepared.splits.test]
    for a, b in zip(predictor.predict(prepared.splits.test), again_predictor.predict(again.splits.test)):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-6)


def test_ipet_hard_targets_keep_only_confident_pool_examples(llama_dir, tmp_path, monkeypatch):
    prepared, captured, costs, _, _ = ipet_fit(llama_dir, tmp_path, monkeypatch, "hard", targets="hard",
                                               min_confidence=0.7)
    _, probs = captured["pool"]
    confident = [i for i, row in enumerate(probs) if float(row.max()) >= 0.7]
    assert 0 < len(confident) < len(probs), "the threshold should keep some and drop some here"
    k_shot = len(prepared.splits.train)
    assert [f["labels"] for f in captured["train"][k_shot:]] == [int(probs[i].argmax()) for i in confident]
    assert costs["pool"]["kept"] == len(confident)


@pytest.mark.parametrize("strategy, message", [
    ({"name": "pet_ensemble", "patterns": PATTERNS[:1]}, "patterns"),
    ({"name": "pet_ensemble", "patterns": [PATTERNS[0], {"template": "{{ text }} was", "verbalizer": {"neutral": " ok"}}]},
     "pattern 2: .*not a label of the task"),
    ({"name": "pet_ensemble", "patterns": [PATTERNS[0], {"template": "{{ txt }} was"}]}, "pattern 2: .*txt"),
    ({"name": "ipet", "patterns": PATTERNS, "final_pattern": 3}, "final_pattern is 3 but there are 2 patterns"),
    ({"name": "ipet", "patterns": PATTERNS, "targets": "fuzzy"}, "targets"),
    ({"name": "pet_ensemble", "patterns": PATTERNS, "search_label_words": {}}, "search_label_words: a pattern ensemble"),
])
def test_bad_ensemble_settings_fail_before_any_model(llama_dir, strategy, message):
    with pytest.raises(ConfigError, match=message):
        prepared = prepare(experiment(llama_dir, strategy))
        encode_members(prepared.strategy, prepared.splits)  # template fields against the data, before any weight
