"""`pet_choices` on classification: the label words are the choices, each scored with every one of its tokens.

The tiny Llamas read BERT's WordPiece vocabulary, where "very bad" and "very good" are two tokens that start alike:
`pet` (first token only) cannot tell them apart; `pet_choices` scores and trains them whole.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import experiment_yaml
from tunelab.config import load_experiment
from tunelab.errors import ConfigError
from tunelab.run import execute, prepare

WORDS = {"negative": "very bad", "positive": "very good"}


def experiment(model_dir, data: dict, strategy: dict, **sections):
    """conftest's tiny experiment, with the words above (a file: errors name its lines)."""
    prompt = {"template": "{{ text }} It was", "verbalizer": dict(WORDS), **sections.pop("prompt", {})}
    train = {"epochs": 1, "log_to": [], **sections.pop("train", {})}
    path = Path(data["train"]).parent / "experiment.yaml"
    return load_experiment(experiment_yaml(path, model_dir, data, strategy, prompt=prompt, train=train, **sections))


def training_scores(strategy, lm, examples: list[dict], shared_prompt: bool) -> torch.Tensor:
    from tunelab.methods.choice_model import ChoiceCollator, ChoiceModel, SharedPromptChoiceModel

    features = strategy.encode(strategy.plan(), examples, "test")
    batch = ChoiceCollator(0, shared_prompt=shared_prompt)(features)
    model = (SharedPromptChoiceModel if shared_prompt else ChoiceModel)(lm).eval()
    with torch.no_grad():
        return model(**batch)["logits"]


def test_every_token_of_each_label_word_is_encoded_as_a_choice(llama_dir, tiny_sentiment):
    strategy = prepare(experiment(llama_dir, tiny_sentiment, {"name": "pet_choices"})).strategy
    features = strategy.encode(strategy.plan(), [{"text": "good fine", "label": "positive"}], "train")
    tokens = [strategy.engine.tokenizer.convert_ids_to_tokens(ids) for ids in features[0]["choice_ids"]]
    assert tokens == [["very", "bad"], ["very", "good"]]  # label order; the word shared at the front is kept
    assert features[0]["labels"] == 1


@pytest.mark.parametrize("length_norm", ["none", "token"])
@pytest.mark.parametrize("shared_prompt", [True, False])
def test_untrained_label_scores_equal_zero_shot(llama_dir, tiny_sentiment, tmp_path, length_norm, shared_prompt):
    """Before training, each label's score (either way of computing it) is the one zero_shot gives that label."""
    prepared = prepare(experiment(llama_dir, tiny_sentiment, {"name": "pet_choices", "length_norm": length_norm}))
    strategy, test = prepared.strategy, prepared.splits.test
    scores = training_scores(strategy, strategy.load_base().model, test, shared_prompt)
    zero = prepare(experiment(llama_dir, tiny_sentiment, {"name": "zero_shot", "length_norm": length_norm}))
    icl, _ = zero.strategy.fit(zero.splits, tmp_path)
    for row, theirs in zip(scores, icl.predict(zero.splits.test), strict=True):
        assert list(theirs["scores"]) == ["negative", "positive"]
        assert row.tolist() == pytest.approx(list(theirs["scores"].values()), abs=1e-4)


def test_pet_refuses_words_that_start_alike_and_pet_choices_learns_them(llama_dir, tiny_sentiment, tmp_path):
    with pytest.raises(ConfigError, match="start with the same token.*or use strategy pet_choices"):
        prepare(experiment(llama_dir, tiny_sentiment, {"name": "pet"}))
    tuned = execute(prepare(experiment(llama_dir, tiny_sentiment, {"name": "pet_choices", "train": "full"},
                                       train={"epochs": 6, "learning_rate": 3e-3})), tmp_path / "tuned")
    zero = execute(prepare(experiment(llama_dir, tiny_sentiment, {"name": "zero_shot"})), tmp_path / "zero")
    assert zero["test"]["accuracy"] < 1.0
    assert tuned["test"]["accuracy"] == 1.0 and tuned["test"]["f1"] == 1.0
    rows = [json.loads(line) for line in (tmp_path / "tuned" / "predictions.jsonl").read_text().splitlines()]
    assert [row["prediction"] for row in rows] == [row["label"] for row in rows]  # label names, not "choice 2"
    assert all(set(row["scores"]) == {"negative", "positive"} for row in rows)
    held = json.loads((tmp_path / "tuned" / "held_out_dev.json").read_text())
    assert held["label_names"] == ["negative", "positive"] and held["gold"] == [1, 1, 1, 0, 0, 0]


@pytest.mark.parametrize("train, delta", [("lora", {"r": 4}), ("prompt_tuning", {"num_virtual_tokens": 3})])
def test_predictions_score_labels_as_training_does(llama_dir, tiny_sentiment, tmp_path, train, delta):
    """Predictions go through zero_shot's engine (soft prompts: the training path); both name labels and give
    each the score it was trained on."""
    prepared = prepare(experiment(llama_dir, tiny_sentiment, {"name": "pet_choices", "train": train, "delta": delta},
                                  train={"learning_rate": 1e-2}))
    predictor, _ = prepared.strategy.fit(prepared.splits, tmp_path)
    test = prepared.splits.test
    for output, trained in zip(predictor.predict(test), predictor.choice_scores(test), strict=True):
        assert list(output["scores"]) == ["negative", "positive"]
        assert list(output["scores"].values()) == pytest.approx(trained, abs=1e-4)
        assert output["prediction"] == ["negative", "positive"][int(torch.tensor(trained).argmax())]


def test_several_words_for_a_label_are_refused_before_weights(llama_dir, tiny_sentiment, monkeypatch):
    import tunelab.models

    monkeypatch.setattr(tunelab.models, "load_model", lambda *a, **k: pytest.fail("weights loaded"))
    words = {"negative": ["very bad", "awful"], "positive": "very good"}
    with pytest.raises(ConfigError, match=r"experiment.yaml, line \d+: pet_choices scores one word per label.*'negative' has 2 \('very bad', 'awful'\)"):
        prepare(experiment(llama_dir, tiny_sentiment, {"name": "pet_choices"}, prompt={"verbalizer": words}))


def test_pet_choices_on_labels_runs_from_the_command_line(llama_dir, tiny_sentiment, tmp_path, capsys):
    import yaml

    from tunelab.cli import main

    raw = {"name": "cli", "model": {"name": str(llama_dir), "max_length": 32},
           "task": {"type": "classification", "label_names": ["negative", "positive"]},
           "data": tiny_sentiment, "strategy": {"name": "pet_choices", "train": "lora"},
           "prompt": {"template": "{{ text }} It was", "verbalizer": WORDS},
           "train": {"epochs": 1, "batch_size": 4, "log_to": [], "progress_bar": False}, "metrics": ["accuracy"]}
    path = tmp_path / "labels.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run"), "--data", tiny_sentiment["test"]]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 4 and all(row["prediction"] in ("negative", "positive") for row in rows)
    assert main(["prompt", str(path), "--n", "1"]) == 0
    assert "very good" in capsys.readouterr().out


def test_label_smoothing_trains_on_labels_where_no_choice_slot_is_padded(llama_dir, tiny_sentiment, tmp_path):
    """Multiple choice refuses label smoothing (it would spread mass onto padded slots, whose score is -1e9);
    on labels every example has every slot, so it trains, with losses of the size a smoothed cross-entropy has."""
    import csv

    config = experiment(llama_dir, tiny_sentiment, {"name": "pet_choices", "train": "full"},
                        train={"epochs": 6, "learning_rate": 3e-3, "label_smoothing": 0.1, "log_to": ["csv"],
                               "logging_steps": 1})
    tuned = execute(prepare(config), tmp_path / "smoothed")
    with open(tmp_path / "smoothed" / "logs.csv", encoding="utf-8") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle) if row.get("loss")]
    assert len(losses) >= 6 and all(0 < loss < 5 for loss in losses)
    assert tuned["test"]["accuracy"] == 1.0


def test_sentence_pairs_read_both_texts_and_score_the_label_words(llama_dir, tmp_path):
    from conftest import write_jsonl

    rows = [{"premise": f"the cat sat {i}", "hypothesis": f"a cat {'sat' if i % 2 else 'ran'}",
             "label": "yes" if i % 2 else "no"} for i in range(8)]
    data = {split: str(write_jsonl(tmp_path / f"{split}.jsonl", rows)) for split in ("train", "dev", "test")}
    config = experiment(llama_dir, data, {"name": "pet_choices"},
                        task={"type": "pair_classification", "text_field": "premise", "text_pair_field": "hypothesis",
                              "label_names": ["no", "yes"]},
                        prompt={"template": "{{ text }} ? {{ text_pair }} :", "verbalizer": {"no": "very bad", "yes": "very good"}})
    prepared = prepare(config)
    strategy = prepared.strategy
    feature = strategy.encode(strategy.plan(), prepared.splits.test[1:2], "test")[0]
    tokenizer = strategy.engine.tokenizer
    assert tokenizer.decode(feature["input_ids"]).endswith("the cat sat 1? a cat sat :")
    assert [tokenizer.decode(ids) for ids in feature["choice_ids"]] == ["very bad", "very good"]
    assert feature["labels"] == 1
