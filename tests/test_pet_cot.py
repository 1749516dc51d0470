"""`pet` (train modes, save/load), `cot` and the generating strategies, wired through real runs on
tiny random models saved as directories (so `load_model` loads them like any local model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_bert_config, tiny_llama_config
from tunelab.config import validate_experiment
from tunelab.demo import demo_data_dir
from tunelab.errors import ConfigError
from tunelab.run import execute, load_run, prepare

TEMPLATE = "Review: {{ text }}\nSentiment:"
WORDS = {"negative": " bad", "positive": " good"}


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, bert_tokenizer) -> Path:
    from transformers import LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(initializer_range=0.2)).save_pretrained(path)
    bert_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert_mlm_dir(tmp_path_factory, bert_tokenizer) -> Path:
    from transformers import BertForMaskedLM

    path = tmp_path_factory.mktemp("tiny-bert-mlm")
    torch.manual_seed(0)
    BertForMaskedLM(tiny_bert_config()).save_pretrained(path)
    bert_tokenizer.save_pretrained(path)
    return path


def experiment(model_dir: Path, strategy: dict, prompt: dict | None = None, **sections):
    demo = demo_data_dir()
    raw = {
        "model": {"name": str(model_dir), "max_length": 64},
        "task": {"type": "classification", "label_names": ["negative", "positive"]},
        "data": {"train": str(demo / "sentiment_train.jsonl"), "dev": str(demo / "sentiment_dev.jsonl"),
                 "test": str(demo / "sentiment_test.jsonl"), "max_test": 8},
        "strategy": strategy,
        "prompt": {"template": TEMPLATE, "verbalizer": WORDS, **(prompt or {})},
        "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "log_to": [], "progress_bar": False,
                  "eval_strategy": "no"},
        "metrics": ["accuracy"],
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return validate_experiment(raw)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed(before: dict, model: torch.nn.Module) -> set[str]:
    after = dict(model.named_parameters())
    return {name for name, value in before.items() if name in after and not torch.equal(value, after[name].detach())}


# --------------------------------------------------------------------------- pet


def fit_pet(model_dir, train: str, tmp_path, monkeypatch, delta=None, **prompt):
    """One optimiser step (8 K-shot examples, batch 8); returns (strategy, splits, predictor, weights before)."""
    from tunelab.methods.pet import PetStrategy

    captured = {}
    original = PetStrategy.wrap

    def spy(self, lm, plan):
        captured.setdefault("before", snapshot(lm))
        return original(self, lm, plan)

    monkeypatch.setattr(PetStrategy, "wrap", spy)
    exp = experiment(model_dir, {"name": "pet", "train": train, **({"delta": delta} if delta else {})}, prompt,
                     data={"k_shot": 4})
    prepared = prepare(exp)
    predictor, costs = prepared.strategy.fit(prepared.splits, tmp_path)
    assert costs["steps"] == 1
    return prepared.strategy, prepared.splits, predictor, captured["before"]


def is_lora(name):
    return "lora_" in name


def is_prompt(name):
    return "prompt_encoder" in name


@pytest.mark.parametrize("train, delta, intended", [
    ("full", None, None),  # None: every parameter
    ("lm_head", None, lambda name: name in ("model.embed_tokens.weight", "lm_head.weight")),  # tied: one matrix
    ("lora", {"r": 4}, is_lora),
    ("prompt_tuning", {"num_virtual_tokens": 4}, is_prompt),
])
def test_pet_step_changes_only_the_intended_parameters_and_reloads(llama_dir, tmp_path, monkeypatch, train, delta, intended):
    strategy, splits, predictor, before = fit_pet(llama_dir, train, tmp_path, monkeypatch, delta)
    moved = changed(before, predictor.model.lm)
    assert moved, "one optimiser step changed nothing"
    if intended is None:
        assert moved == set(before)
    else:
        assert all(intended(name) for name in moved), sorted(n for n in moved if not intended(n))
    scores = [o["scores"] for o in predictor.predict(splits.test)]
    run_dir = tmp_path / "saved"
    run_dir.mkdir()
    predictor.save(run_dir)
    reloaded = [o["scores"] for o in strategy.load(run_dir).predict(splits.test)]
    for a, b in zip(scores, reloaded):
        assert a == pytest.approx(b, abs=1e-5)


def test_pet_trains_a_masked_lm_at_the_mask(bert_mlm_dir, tmp_path, monkeypatch):
    strategy, splits, predictor, before = fit_pet(bert_mlm_dir, "lm_head", tmp_path, monkeypatch,
                                                  template="{{ text }} It was {{ mask }}.")
    moved = changed(before, predictor.model.lm)
    assert moved and all(name.startswith("cls.") or "word_embeddings" in name for name in moved), sorted(moved)
    run_dir = tmp_path / "saved"
    run_dir.mkdir()
    predictor.save(run_dir)
    first = predictor.predict(splits.test[:3])
    for again, once in zip(strategy.load(run_dir).predict(splits.test[:3]), first):
        assert again["scores"] == pytest.approx(once["scores"], abs=1e-5)


def test_untrained_pet_scores_equal_zero_shot(llama_dir, tmp_path):
    """Same template, same words: PET's label softmax at initialisation is zero_shot's label distribution."""
    import numpy as np

    from tunelab.methods.pet import PetPredictor

    exp = experiment(llama_dir, {"name": "pet"})
    strategy, splits = prepare(exp).strategy, prepare(exp).splits
    plan = strategy.plan()
    loaded = strategy.load_base()
    pet = PetPredictor(strategy, strategy.wrap(loaded.model, plan), loaded, plan).predict(splits.test)
    zero = prepare(experiment(llama_dir, {"name": "zero_shot"}))
    icl, _ = zero.strategy.fit(zero.splits, tmp_path)
    for p, z in zip(pet, icl.predict(zero.splits.test)):
        logits = np.array([z["scores"][label] for label in ("negative", "positive")])
        probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        assert [p["scores"]["negative"], p["scores"]["positive"]] == pytest.approx(probs.tolist(), abs=1e-5)
        assert p["prediction"] == z["prediction"]


@pytest.mark.parametrize("strategy, prompt, message", [
    ({"name": "pet", "train": "bitfit"}, {}, "must be full, lm_head or a PEFT method"),
    ({"name": "pet", "train": "lora", "delta": {"rank": 4}}, {}, "strategy.delta.rank"),
    ({"name": "pet", "train": "full", "delta": {"r": 4}}, {}, "takes no settings"),
    ({"name": "pet"}, {"verbalizer": {"negative": " bad", "neutral": " ok"}}, "not a label of the task"),
])
def test_pet_bad_settings_fail_before_any_model(llama_dir, strategy, prompt, message):
    with pytest.raises(ConfigError, match=message):
        prepare(experiment(llama_dir, strategy, prompt))


def test_pet_refuses_mask_misuse_and_shared_first_tokens(llama_dir, bert_mlm_dir, tmp_path):
    def fit(model_dir, **prompt):
        prepared = prepare(experiment(model_dir, {"name": "pet"}, prompt))
        prepared.strategy.fit(prepared.splits, tmp_path)

    with pytest.raises(ConfigError, match="a causal LM answers with the next token"):
        fit(llama_dir, template="{{ text }} It was {{ mask }}.")
    with pytest.raises(ConfigError, match="needs {{ mask }}"):
        fit(bert_mlm_dir)
    with pytest.raises(ConfigError, match="start with the same token"):
        fit(llama_dir, verbalizer={"negative": " good bad", "positive": " good"})
    with pytest.raises(ConfigError, match="has none"):
        prepare(experiment("minilm-l6", {"name": "pet"}))
