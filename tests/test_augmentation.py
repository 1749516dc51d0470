"""Augmentation of the K-shot training split (train.augment): token edits, paraphrase by a causal LM,
back-translation through two seq2seq models — on tiny random models built from configs."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
import yaml

import tunelab.training.augment as augment
from conftest import experiment_yaml, write_jsonl
from tunelab.cli import main
from tunelab.config import AugmentConfig, ExperimentConfig, load_experiment
from tunelab.methods.classifier import ClassifierStrategy
from tunelab.training.augment.token_edits import token_edit_copies


def rows(n: int, offset: int = 0) -> list[dict]:
    """Texts whose words name their example (g3a ...), so no edit of one can equal another."""
    good = [{"text": f"g{i}a g{i}b good fine g{i}c", "label": "positive"} for i in range(offset, offset + n)]
    bad = [{"text": f"b{i}a b{i}b bad awful b{i}c", "label": "negative"} for i in range(offset, offset + n)]
    return good + bad


@pytest.fixture
def data(tmp_path) -> dict:
    """A pool of 8 per class (K=2 for train, 2 per class for dev, drawn by seed) and a test file of its own."""
    return {"train": str(write_jsonl(tmp_path / "pool.jsonl", rows(8))),
            "test": str(write_jsonl(tmp_path / "test.jsonl", rows(2, offset=100))), "k_shot": 2}


@pytest.fixture
def tiny_mt_dir(tmp_path_factory, bert_tokenizer):
    """A tiny random Marian translation model with the MiniLM tokenizer (it 'translates' into noise)."""
    from transformers import MarianConfig, MarianMTModel

    torch.manual_seed(0)
    config = MarianConfig(vocab_size=bert_tokenizer.vocab_size, d_model=16, encoder_layers=1, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                          max_position_embeddings=64, pad_token_id=0, eos_token_id=102, decoder_start_token_id=0)
    directory = tmp_path_factory.mktemp("tiny-mt")
    MarianMTModel(config).save_pretrained(directory)
    bert_tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def fitted(monkeypatch):
    """The splits every head-strategy fit received."""
    seen, original = [], ClassifierStrategy.fit

    def spy(self, splits, run_dir):
        seen.append(splits)
        return original(self, splits, run_dir)

    monkeypatch.setattr(ClassifierStrategy, "fit", spy)
    return seen


@pytest.fixture
def generations(monkeypatch):
    """Count the calls that make new texts (a cache hit makes none)."""
    calls, original = [], augment.generate_copies

    def spy(method, texts, *args):
        calls.append((method, len(texts)))
        return original(method, texts, *args)

    monkeypatch.setattr(augment, "generate_copies", spy)
    return calls


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def texts(examples) -> set[str]:
    return {e["text"] for e in examples}


# --------------------------------------------------------------------------------------------- methods


def test_token_edits_are_deterministic_by_seed_and_make_the_copies_asked():
    settings = AugmentConfig(method="token_edits", copies=3, edit_rate=0.2)
    sources = ["the film was a quiet triumph of craft", "dull", "an utterly forgettable sequel"]
    first = token_edit_copies(sources, 3, settings, seed=1)
    assert first == token_edit_copies(sources, 3, settings, seed=1)
    assert first != token_edit_copies(sources, 3, settings, seed=2)
    for source, made in zip(sources, first):
        assert len(made) == len(set(made)) and source not in made
    assert len(first[0]) == len(first[2]) == 3
    assert first[1] in ([], ["dull dull"])  # one word: only an insertion changes it
    words = sorted("the film was a quiet triumph of craft".split())
    swaps = token_edit_copies(sources[:1], 3, AugmentConfig(method="token_edits", copies=3, operations=["swap"]), seed=1)
    assert all(sorted(t.split()) == words for t in swaps[0])  # a swap keeps the words, changes the order
    deletes = token_edit_copies(sources[:1], 2, AugmentConfig(method="token_edits", copies=2, operations=["delete"]), seed=1)
    assert all(len(t.split()) == 7 for t in deletes[0])  # 0.1 × 8 words → one word deleted


def test_paraphrase_through_a_tiny_causal_lm_dir(tiny_llama_dir):
    settings = AugmentConfig(method="paraphrase", model=str(tiny_llama_dir), copies=2, max_new_tokens=6)
    sources = ["a warm and funny film", "a cold and joyless film"]
    made = augment.generate_copies("paraphrase", sources, settings, 3, ExperimentConfig())
    assert [len(row) for row in made] == [2, 2] and all(t.strip() for row in made for t in row)
    assert made == augment.generate_copies("paraphrase", sources, settings, 3, ExperimentConfig())  # same seed
    assert made != augment.generate_copies("paraphrase", sources, settings, 4, ExperimentConfig())


def test_back_translation_through_two_tiny_seq2seq_models(tiny_mt_dir):
    settings = AugmentConfig(method="back_translation", forward_model=str(tiny_mt_dir), backward_model=str(tiny_mt_dir),
                             copies=2, max_new_tokens=8)
    made = augment.generate_copies("back_translation", ["a warm film", "a cold film", "fine"], settings, 1, ExperimentConfig())
    assert [len(row) for row in made] == [2, 2, 2] and all(t.strip() for row in made for t in row)
    assert made == augment.generate_copies("back_translation", ["a warm film", "a cold film", "fine"], settings, 1,
                                           ExperimentConfig())


def test_only_the_first_text_field_changes_and_labels_or_targets_stay():
    pair = ExperimentConfig.model_validate({"task": {"type": "pair_classification", "text_field": "premise"},
                                            "train": {"augment": {"method": "token_edits"}}})
    source = {"premise": "a b c", "text": "a b c", "text_pair": "x y", "label": "yes", "_source": "f.jsonl:3"}
    added, written = augment.augmented_examples(pair, [source], [["b a c"]])
    assert added == [{**source, "premise": "b a c", "text": "b a c", "_source": "f.jsonl:3 (token_edits copy 1)"}]
    assert written == [{"text": "b a c", "text_pair": "x y", "label": "yes", "source": "f.jsonl:3",
                        "source_text": "a b c", "method": "token_edits"}]


# --------------------------------------------------------------------------------------------- runs


def test_a_run_trains_on_the_copies_and_dev_and_test_never_see_them(tmp_path, tiny_bert_dir, data, fitted):
    exp = experiment_yaml(tmp_path / "e.yaml", tiny_bert_dir, data, {"name": "head"},
                          train={"augment": {"method": "token_edits", "copies": 3}, "epochs": 1})
    assert main(["run", str(exp), "--out", str(tmp_path / "runs" / "r")]) == 0
    run = tmp_path / "runs" / "r"
    written = read_jsonl(run / augment.AUGMENTED_FILE)
    splits = fitted[0]
    originals = [e for e in splits.train if "copy" not in e["_source"]]
    assert len(originals) == 4 and len(written) == 12 and len(splits.train) == 16  # K=2 × 2 classes, 3 copies each
    assert texts(written) <= texts(splits.train) and not texts(written) & texts(originals)
    assert not texts(written) & (texts(splits.dev) | texts(splits.test))
    assert {r["source_text"] for r in written} == texts(originals)
    by_text = {e["text"]: e["label"] for e in originals}
    assert all(r["label"] == by_text[r["source_text"]] and r["method"] == "token_edits" for r in written)
    tested = {r["text"] for r in read_jsonl(run / "predictions.jsonl")}
    assert tested == texts(read_jsonl(tmp_path / "test.jsonl")) and not tested & texts(written)
    metrics, costs = (json.loads((run / name).read_text()) for name in ("metrics.json", "costs.json"))
    assert metrics["num_train"] == 4 and costs["num_augmented"] == 12 and costs["augment_cached"] is False
    assert costs["augment_seconds"] >= 0


def test_the_second_run_reads_the_cache(tmp_path, tiny_bert_dir, data, generations):
    exp = experiment_yaml(tmp_path / "e.yaml", tiny_bert_dir, data, {"name": "head"},
                          train={"augment": {"method": "token_edits", "copies": 2}, "epochs": 1})
    out = tmp_path / "runs"
    assert main(["run", str(exp), "--out", str(out / "one")]) == 0
    assert main(["run", str(exp), "--out", str(out / "two")]) == 0
    assert generations == [("token_edits", 4)]  # made once
    assert len(list((out / augment.CACHE_DIR).glob("*.json"))) == 1
    assert (out / "one" / augment.AUGMENTED_FILE).read_text() == (out / "two" / augment.AUGMENTED_FILE).read_text()
    assert json.loads((out / "two" / "costs.json").read_text())["augment_cached"] is True
    assert main(["run", str(exp), "train.seed=7", "--out", str(out / "three")]) == 0  # another seed: new texts
    assert generations == [("token_edits", 4), ("token_edits", 4)]


def test_back_translation_run_end_to_end(tmp_path, tiny_bert_dir, tiny_mt_dir, data):
    aug = {"method": "back_translation", "forward_model": str(tiny_mt_dir), "backward_model": str(tiny_mt_dir),
           "max_new_tokens": 6}
    exp = experiment_yaml(tmp_path / "e.yaml", tiny_bert_dir, data, {"name": "head"}, train={"augment": aug, "epochs": 1})
    assert main(["run", str(exp), "--out", str(tmp_path / "r")]) == 0
    written = read_jsonl(tmp_path / "r" / augment.AUGMENTED_FILE)
    assert written and all(r["method"] == "back_translation" and r["text"].strip() for r in written)


def test_sft_with_paraphrase_keeps_the_target(tmp_path, tiny_llama_dir):
    pairs = [{"text": f"item {i} is here today", "summary": f"item {i}"} for i in range(3)]
    files = {s: str(write_jsonl(tmp_path / f"{s}.jsonl", pairs)) for s in ("train", "dev", "test")}
    aug = {"method": "paraphrase", "model": str(tiny_llama_dir), "copies": 2, "max_new_tokens": 5}
    exp = experiment_yaml(tmp_path / "sft.yaml", tiny_llama_dir, files, {"name": "sft", "generation": {"max_new_tokens": 3}},
                          task={"type": "generation", "target_field": "summary", "label_names": None},
                          prompt={"template": "Text: {{ text }}\nShort:"}, metrics=["rouge1"],
                          train={"epochs": 1, "augment": aug})
    assert main(["run", str(exp), "--out", str(tmp_path / "r")]) == 0
    written = read_jsonl(tmp_path / "r" / augment.AUGMENTED_FILE)
    targets = {p["text"]: p["summary"] for p in pairs}
    assert written and all(r["target"] == targets[r["source_text"]] and r["text"] != r["source_text"] for r in written)


# --------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("aug, strategy, expected", [
    ({"method": "mixup"}, "head", "train.augment.method"),
    ({"method": "token_edits", "copies": 0}, "head", "train.augment.copies"),
    ({"method": "token_edits", "forward_model": "x"}, "head", "forward_model is a setting of method back_translation"),
    ({"method": "back_translation", "forward_model": "./no/such/dir", "backward_model": "./no/such/dir"}, "head",
     "train.augment.forward_model: model directory not found"),
    ({"method": "back_translation", "forward_model": "TINY_LLAMA", "backward_model": "TINY_LLAMA"}, "head",
     "is not a translation (sequence-to-sequence) model"),
    ({"method": "paraphrase", "model": "minilm-l6"}, "head", "train.augment.model: embedded model 'minilm-l6' is not a causal LM"),
    ({"method": "token_edits"}, "zero_shot", "train.augment applies to strategies that train; zero_shot trains nothing"),
])
def test_bad_settings_exit_2_naming_key_and_line_before_any_run_dir(tmp_path, tiny_bert_dir, tiny_llama_dir, data, capsys,
                                                                    aug, strategy, expected):
    aug = {k: str(tiny_llama_dir) if v == "TINY_LLAMA" else v for k, v in aug.items()}
    model, extra = (tiny_llama_dir, {"prompt": {"template": "{{ text }} It was",
                                                "verbalizer": {"negative": "bad", "positive": "good"}}}) \
        if strategy == "zero_shot" else (tiny_bert_dir, {})
    exp = experiment_yaml(tmp_path / "e.yaml", model, data, {"name": strategy}, train={"augment": aug}, **extra)
    out = tmp_path / "out"
    assert main(["run", str(exp), "--out", str(out / "r")]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    line = int(re.search(rf"{re.escape(str(exp))}, line (\d+)", err).group(1))
    assert exp.read_text().splitlines()[line - 1].strip().split(":")[0] in ("augment", *aug)  # the key's own line
    assert "Traceback" not in err and not out.exists()


def test_an_augmentation_that_adds_nothing_exits_2_before_training(tmp_path, tiny_bert_dir, capsys, fitted):
    one_word = [{"text": f"{label[0]}{i}", "label": label} for i in range(4) for label in ("negative", "positive")]
    files = {"train": str(write_jsonl(tmp_path / "train.jsonl", one_word)), "test": str(write_jsonl(tmp_path / "t.jsonl", one_word))}
    exp = experiment_yaml(tmp_path / "e.yaml", tiny_bert_dir, files, {"name": "head"},
                          train={"augment": {"method": "token_edits", "operations": ["swap", "delete"]}})
    out = tmp_path / "out"
    assert main(["run", str(exp), "--out", str(out / "r")]) == 2
    err = capsys.readouterr().err
    assert "train.augment.method token_edits produced no new text" in err and "line" in err
    assert fitted == [] and not out.exists()  # no training, no run dir, no cache


# --------------------------------------------------------------------------------------------- sweeps


def test_a_sweep_with_an_augmentation_axis_resumes_like_any_other(tmp_path, tiny_bert_dir, data, generations):
    from tunelab.sweep import run_sweep
    from tunelab.sweep.expand import config_changes

    path = experiment_yaml(tmp_path / "s.yaml", tiny_bert_dir, data, {"name": "head"})
    raw = yaml.safe_load(path.read_text())
    raw["train"].update(epochs=1, eval_strategy="no")
    raw["output_dir"] = str(tmp_path / "runs")
    raw["sweep"] = {"isolation": "none", "seeds": [1, 2], "strategies": [
        "lora", {"name": "lora", "id": "lora-aug", "train": {"augment": {"method": "token_edits", "copies": 2}}}]}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    first = run_sweep(load_experiment(path))
    assert (first.ran, first.skipped, first.failed) == (4, 0, [])
    assert generations == [("token_edits", 4), ("token_edits", 4)]  # one per seed, only for lora-aug
    root = first.root
    assert not (root / "lora-k2-seed1" / augment.AUGMENTED_FILE).exists()
    assert len(read_jsonl(root / "lora-aug-k2-seed1" / augment.AUGMENTED_FILE)) == 8
    again = run_sweep(load_experiment(path))
    assert (again.ran, again.skipped) == (0, 4)
    shutil.rmtree(root / "lora-aug-k2-seed2")
    third = run_sweep(load_experiment(path))
    assert (third.ran, third.skipped) == (1, 3) and len(generations) == 2  # rerun from the sweep's cache
    cell = json.loads((root / "lora-k2-seed1" / "cell.json").read_text())["config"]
    del cell["train"]["augment"]  # as a cell finished before the key existed
    assert config_changes(cell, json.loads((root / "lora-k2-seed1" / "cell.json").read_text())["config"]) == []


def test_a_sweep_entry_that_trains_nothing_refuses_augment_before_any_cell(tmp_path, tiny_bert_dir, data, capsys):
    path = experiment_yaml(tmp_path / "s.yaml", tiny_bert_dir, data, {"name": "head"},
                           train={"augment": {"method": "token_edits"}})
    raw = yaml.safe_load(path.read_text())
    raw["output_dir"] = str(tmp_path / "runs")
    raw["sweep"] = {"isolation": "none", "strategies": ["head", {"name": "zero_shot", "model": {"name": "smollm2-135m"}}]}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["compare", str(path)]) == 2
    err = capsys.readouterr().err
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text.strip() == "augment:")
    assert f"line {line}: train.augment applies to strategies that train; zero_shot trains nothing" in err, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("kind, section", [("multitask", {"sampling": "proportional"}), ("continual", {"method": "sequential"})])
def test_multi_task_and_continual_runs_refuse_augment(tmp_path, tiny_bert_dir, data, capsys, kind, section):
    path = experiment_yaml(tmp_path / "m.yaml", tiny_bert_dir, data, {"name": "head"},
                           train={"augment": {"method": "token_edits"}})
    raw = yaml.safe_load(path.read_text())
    raw["tasks"] = [{"name": "one", "data": data}, {"name": "two", "data": data}]
    raw[kind] = section
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["run", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"train.augment applies to single-task runs, not to {kind} runs" in err and "line" in err, err
    assert not (tmp_path / "r").exists()


def test_the_cache_key_follows_the_split_the_settings_the_seed_and_a_model_dir_replaced_in_place(tmp_path):
    model = tmp_path / "lm"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"1")
    config = ExperimentConfig.model_validate({"train": {"augment": {"method": "paraphrase", "model": str(model)}}})
    train = [{"text": "a b c", "label": "x"}]
    key = augment.cache_key(config, train)
    assert augment.cache_key(config, [{"text": "a b d", "label": "x"}]) != key
    config.train.seed = 1
    assert augment.cache_key(config, train) != key
    config.train.seed = 42
    assert augment.cache_key(config, train) == key
    (model / "model.safetensors").write_bytes(b"22")
    assert augment.cache_key(config, train) != key
