"""`pet_choices`: prompt-based fine-tuning for multiple choice, on tiny random Llamas saved as directories."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_jsonl
from tunelab.config import validate_experiment
from tunelab.errors import ConfigError
from tunelab.run import execute, prepare

WORDS = ["apple", "river", "stone", "cloud", "green", "house", "light", "music", "paper", "table"]


def questions(count: int, seed: int, choices: int = 3, longest: int = 3) -> list[dict]:
    """The answer is always the word 'yes' among distractors of 1 to `longest` words, in a random slot: learnable,
    but not by position. Some questions have one choice fewer, so batches mix choice counts and choice lengths."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        distractors = choices - 1 - (i % 3 == 0)
        options = [" ".join(rng.sample(WORDS, rng.randint(1, longest))) for _ in range(distractors)] + ["yes"]
        rng.shuffle(options)
        rows.append({"question": " ".join(rng.sample(WORDS, 4)) + "?", "choices": options, "answer": "yes"})
    return rows


def write_splits(directory: Path, longest: int = 3) -> dict:
    return {"train": str(write_jsonl(directory / "train.jsonl", questions(16, 1, longest=longest))),
            "dev": str(write_jsonl(directory / "dev.jsonl", questions(8, 2, longest=longest))),
            "test": str(write_jsonl(directory / "test.jsonl", questions(12, 3, longest=longest)))}


@pytest.fixture
def choice_data(tmp_path) -> dict:
    return write_splits(tmp_path)


def experiment(model_dir: Path, data: dict, strategy: dict, **sections):
    raw = {
        "name": "choices",
        "model": {"name": str(model_dir), "max_length": 64},
        "task": {"type": "multiple_choice", "text_field": "question", "label_field": "answer"},
        "data": dict(data),
        "strategy": strategy,
        "prompt": {"template": "Question: {{ question }}\nAnswer:"},
        "train": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "log_to": [], "progress_bar": False},
        "metrics": ["accuracy"],
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return validate_experiment(raw)


def training_scores(strategy, lm, examples: list[dict], shared_prompt: bool, grad: bool = False) -> torch.Tensor:
    """(B, C) scores of one batch as training computes them, by the shared-prompt model or a row per choice."""
    from tunelab.methods.choice_model import ChoiceCollator, ChoiceModel, SharedPromptChoiceModel

    features = strategy.encode(strategy.plan(), examples, "test")
    batch = ChoiceCollator(0, shared_prompt=shared_prompt)(features)
    model = (SharedPromptChoiceModel if shared_prompt else ChoiceModel)(lm).eval()
    with torch.set_grad_enabled(grad):
        return model(**batch)


@pytest.mark.parametrize("length_norm", ["none", "char"])
@pytest.mark.parametrize("shared_prompt", [True, False])
def test_untrained_training_scores_equal_zero_shot(llama_dir, choice_data, tmp_path, length_norm, shared_prompt):
    """The read-out is zero_shot's: before training, every choice's score (either way of computing it) is the one
    zero_shot gives it, and untrained predictions are zero_shot's."""
    prepared = prepare(experiment(llama_dir, choice_data, {"name": "pet_choices", "length_norm": length_norm}))
    strategy, test = prepared.strategy, prepared.splits.test
    scores = training_scores(strategy, strategy.load_base().model, test, shared_prompt)["logits"]
    zero = prepare(experiment(llama_dir, choice_data, {"name": "zero_shot", "length_norm": length_norm}))
    icl, _ = zero.strategy.fit(zero.splits, tmp_path)
    for row, example, theirs in zip(scores, test, icl.predict(zero.splits.test), strict=True):
        assert list(theirs["scores"]) == example["choices"]
        assert row[: len(example["choices"])].tolist() == pytest.approx(list(theirs["scores"].values()), abs=1e-4)
        assert (row[len(example["choices"]):] < -1e8).all()  # slots it does not have


def test_the_shared_prompt_gives_the_gradients_of_a_row_per_choice(llama_dir, choice_data):
    prepared = prepare(experiment(llama_dir, choice_data, {"name": "pet_choices"}))
    strategy, test = prepared.strategy, prepared.splits.test[:5]
    lm = strategy.load_base().model
    gradients = []
    for shared in (True, False):
        lm.zero_grad()
        out = training_scores(strategy, lm, [dict(e) for e in test], shared, grad=True)
        out["loss"].backward()
        gradients.append({name: p.grad.clone() for name, p in lm.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys() and len(gradients[0]) > 10
    for name, grad in gradients[0].items():
        assert torch.allclose(grad, gradients[1][name], atol=1e-5, rtol=1e-3), name


def test_pet_choices_learns_the_answer_the_prompt_alone_does_not_give(llama_dir, tmp_path):
    # one-word distractors: a one-word answer among longer ones would win by its summed log-likelihood untrained
    choice_data = write_splits(tmp_path, longest=1)
    config = experiment(llama_dir, choice_data, {"name": "pet_choices", "train": "full"},
                        train={"epochs": 4, "learning_rate": 3e-3})
    zero = execute(prepare(experiment(llama_dir, choice_data, {"name": "zero_shot"})), tmp_path / "zero")
    tuned = execute(prepare(config), tmp_path / "tuned")
    assert zero["test"]["accuracy"] < 0.8
    assert tuned["test"]["accuracy"] == 1.0
    costs = json.loads((tmp_path / "tuned" / "costs.json").read_text())
    assert costs["best_dev"]["accuracy"] == 1.0 and costs["trainable_params"] == costs["total_params"]
    again = prepare(config)
    train = again.strategy.encode(again.strategy.plan(), again.splits.train, "train")
    assert costs["train_tokens"] == 4 * sum(len(f["input_ids"]) + sum(map(len, f["choice_ids"])) for f in train)
    held = json.loads((tmp_path / "tuned" / "held_out_dev.json").read_text())
    gold = [row["choices"].index("yes") for row in questions(8, 2, longest=1)]
    assert held["gold"] == gold  # dev slots line up with the dev examples' own choices
    rows = [json.loads(line) for line in (tmp_path / "tuned" / "predictions.jsonl").read_text().splitlines()]
    assert [row["prediction"] for row in rows] == ["yes"] * 12


def test_a_lora_step_changes_only_lora_weights_and_the_run_reloads(llama_dir, choice_data, tmp_path):
    from tunelab.run import load_run

    prepared = prepare(experiment(llama_dir, choice_data, {"name": "pet_choices", "train": "lora", "delta": {"r": 4}},
                                  train={"eval_strategy": "no"}))
    loaded = prepared.strategy.load_base()
    before = {name: p.detach().clone() for name, p in loaded.model.named_parameters()}
    metrics = execute(prepared, tmp_path / "run")
    _, _, predictor = load_run(tmp_path / "run")
    lm = predictor.model.lm
    moved = {name for name, p in lm.named_parameters() if "lora_" in name}
    assert moved, "no LoRA weights in the reloaded model"
    base = {name.replace("base_model.model.", "").replace(".base_layer", ""): p for name, p in lm.named_parameters()
            if "lora_" not in name}
    shared = [name for name in before if name in base]
    assert len(shared) == len(before), sorted(set(before) - set(base))
    assert all(torch.equal(before[name], base[name]) for name in shared)
    again = predictor.predict(prepared.splits.test)
    saved = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert np.mean([a["prediction"] == s["prediction"] for a, s in zip(again, saved)]) == 1.0
    assert metrics["test"]["accuracy"] == pytest.approx(np.mean([a["prediction"] == "yes" for a in again]))


@pytest.mark.parametrize("shared_prompt", [True, False])
def test_choice_scores_ignore_the_padding_of_shorter_rows(llama_dir, choice_data, shared_prompt):
    """An example scored alone and inside a batch of longer prompts and more choices gets the same scores."""
    prepared = prepare(experiment(llama_dir, choice_data, {"name": "pet_choices"}))
    strategy, test = prepared.strategy, prepared.splits.test
    lm = strategy.load_base().model
    short = dict(test[0], question="why?")
    together = training_scores(strategy, lm, [short] + test[1:6], shared_prompt)["logits"][0]
    alone = training_scores(strategy, lm, [short], shared_prompt)["logits"][0]
    count = len(short["choices"])
    assert together[:count].tolist() == pytest.approx(alone[:count].tolist(), abs=1e-4)


BAD = {
    "pet on multiple choice": ({"name": "pet"}, {}, "use strategy pet_choices"),
    "a new head": ({"name": "pet_choices", "train": "head"}, {}, "pairs only with a classification-head read-out"),
    "nothing trains": ({"name": "pet_choices", "train": "none"}, {}, "trains nothing"),
    "a verbalizer": ({"name": "pet_choices"}, {"prompt": {"verbalizer": {"a": "b"}}}, "remove prompt.verbalizer"),
    "a field the data lacks": ({"name": "pet_choices"}, {"prompt": {"template": "{{ title }}"}}, "'title'"),
    "a generation task": ({"name": "pet_choices"}, {"task": {"type": "generation", "target_field": "answer"}},
                          "supports task.type multiple_choice, classification, pair_classification"),
    "unknown setting": ({"name": "pet_choices", "length_norms": "char"}, {}, "length_norms"),
    "R-Drop": ({"name": "pet_choices"}, {"train": {"rdrop_alpha": 1.0}}, "train.rdrop_alpha does not apply"),
    "adversarial": ({"name": "pet_choices"}, {"train": {"adversarial": {"method": "fgm", "epsilon": 0.5}}},
                    "train.adversarial does not apply"),
    "augmentation": ({"name": "pet_choices"}, {"train": {"augment": {"method": "token_edits"}}}, "train.augment does not apply"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_pet_choices_input_fails_before_any_weight_loads(llama_dir, choice_data, monkeypatch, case):
    import tunelab.models

    strategy, sections, message = BAD[case]

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(tunelab.models, "load_model", refuse)
    with pytest.raises(ConfigError, match=message):
        prepare(experiment(llama_dir, choice_data, strategy, **sections))


def test_without_training_data_it_points_to_the_prompting_strategies(llama_dir, choice_data):
    with pytest.raises(ConfigError, match="pet_choices trains on data.train.*use zero_shot or few_shot"):
        prepare(experiment(llama_dir, {**choice_data, "train": None}, {"name": "pet_choices"}))


def test_an_encoder_without_lm_head_is_refused(tiny_bert_dir, choice_data):
    with pytest.raises(ConfigError, match="causal"):
        prepare(experiment(tiny_bert_dir, choice_data, {"name": "pet_choices"}))


def test_pet_choices_runs_from_the_command_line(llama_dir, choice_data, tmp_path, capsys):
    import yaml

    from tunelab.cli import main

    raw = {"name": "cli", "model": {"name": str(llama_dir), "max_length": 64},
           "task": {"type": "multiple_choice", "text_field": "question", "label_field": "answer"},
           "data": choice_data, "strategy": {"name": "pet_choices", "train": "lora"},
           "prompt": {"template": "Question: {{ question }}\nAnswer:"},
           "train": {"epochs": 1, "batch_size": 4, "log_to": [], "progress_bar": False}, "metrics": ["accuracy"]}
    path = tmp_path / "mc.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]["accuracy"] >= 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run"), "--data", choice_data["test"]]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 12 and all(row["prediction"] in row["scores"] for row in rows)
    assert main(["prompt", str(path), "--n", "1"]) == 0
    assert "Question: " in capsys.readouterr().out


@pytest.mark.parametrize("train, delta", [("lora", {"r": 4}), ("prompt_tuning", {"num_virtual_tokens": 3}), ("adapter", {}), ("bitfit", {"add_biases": True})])
def test_predictions_score_as_training_scores_after_training(llama_dir, choice_data, tmp_path, train, delta):
    """Predictions go through zero_shot's engine (soft prompts: the training path); on a trained model both paths
    give each choice the score it was trained on."""
    prepared = prepare(experiment(llama_dir, choice_data, {"name": "pet_choices", "train": train, "delta": delta},
                                  train={"learning_rate": 1e-2}))
    predictor, _ = prepared.strategy.fit(prepared.splits, tmp_path)
    test = prepared.splits.test
    for output, trained in zip(predictor.predict(test), predictor.choice_scores(test), strict=True):
        assert list(output["scores"].values()) == pytest.approx(trained, abs=1e-4)


def test_a_prompt_longer_than_the_context_is_refused_before_weights(llama_dir, tmp_path, monkeypatch):
    import tunelab.models

    rows = questions(6, 4)
    rows[5]["question"] = " ".join(WORDS * 8)  # 80 words: past max_length 64
    data = {split: str(write_jsonl(tmp_path / f"{split}.jsonl", rows)) for split in ("train", "dev", "test")}
    monkeypatch.setattr(tunelab.models, "load_model", lambda *a, **k: pytest.fail("weights loaded"))
    with pytest.raises(ConfigError, match="more than the context of 64 tokens"):
        prepare(experiment(llama_dir, data, {"name": "pet_choices"}))


def test_a_sweep_compares_pet_choices_with_zero_shot_and_reports_both(llama_dir, tmp_path, capsys):
    import csv

    import yaml

    from tunelab.cli import main

    raw = {"name": "mc-sweep", "model": {"name": str(llama_dir), "max_length": 64},
           "task": {"type": "multiple_choice", "text_field": "question", "label_field": "answer"},
           "data": {**write_splits(tmp_path, longest=1), "dev": None, "k_shot": 8, "dev_k_shot": 8},
           "prompt": {"template": "Question: {{ question }}\nAnswer:"},
           "train": {"epochs": 4, "batch_size": 4, "learning_rate": 3e-3, "log_to": [], "progress_bar": False},
           "metrics": ["accuracy"],
           "sweep": {"seeds": [1], "strategies": [{"name": "zero_shot"}, {"name": "pet_choices", "settings": {"train": "full"}}]}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    assert main(["compare", str(path), "--out", str(tmp_path / "sweep")]) == 0
    with open(tmp_path / "sweep" / "leaderboard.csv", encoding="utf-8") as handle:
        board = {row["strategy"]: row for row in csv.DictReader(handle)}
    assert set(board) == {"zero_shot", "pet_choices"}
    assert float(board["pet_choices"]["accuracy_mean"]) > float(board["zero_shot"]["accuracy_mean"])
    assert "pet_choices" in (tmp_path / "sweep" / "report.md").read_text()
    # its dev outputs (held out across folds) name each question's own choices, as zero_shot's do, so the report's
    # paired dev comparisons read them alike (they were "choice 2" slots, never equal to a gold answer)
    for cell in ("pet_choices-k8-seed1", "zero_shot-k8-seed1"):
        rows = rows_of(tmp_path / "sweep" / cell)
        assert len(rows) == 8 and all(set(row["scores"]) == set(row["choices"]) for row in rows), cell
    held = json.loads((tmp_path / "sweep" / "pet_choices-k8-seed1" / "costs.json").read_text())["held_out_dev"]
    assert np.mean([row["prediction"] == row["label"] for row in rows_of(tmp_path / "sweep" / "pet_choices-k8-seed1")]) \
        == pytest.approx(held["accuracy"])


def rows_of(cell: Path) -> list[dict]:
    return [json.loads(line) for line in (cell / "dev_predictions.jsonl").read_text().splitlines()]


def test_label_smoothing_trains_with_questions_of_fewer_choices(llama_dir, choice_data, tmp_path):
    """Every third question lacks a choice slot (scored -1e9): smoothing spreads over the choices a question has,
    so the logged losses stay those of a smoothed cross-entropy (ε/C on the missing slot would add ~3e7)."""
    import csv

    config = experiment(llama_dir, choice_data, {"name": "pet_choices", "train": "full"},
                        train={"epochs": 2, "learning_rate": 1e-3, "label_smoothing": 0.1, "log_to": ["csv"],
                               "logging_steps": 1})
    execute(prepare(config), tmp_path / "smoothed")
    with open(tmp_path / "smoothed" / "logs.csv", encoding="utf-8") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle) if row.get("loss")]
    assert len(losses) >= 8 and all(0 < loss < 10 for loss in losses)
