"""`pet` (train modes, save/load), `cot` and the generating strategies, wired through real runs on
tiny random models saved as directories (so `load_model` loads them like any local model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_bert_config
from tunelab.config import validate_experiment
from tunelab.demo import demo_data_dir
from tunelab.errors import ConfigError
from tunelab.run import execute, load_run, prepare

TEMPLATE = "Review: {{ text }}\nSentiment:"
WORDS = {"negative": " bad", "positive": " good"}


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
    ({"name": "pet", "train": "head"}, {}, "pairs only with a classification-head read-out; with 'pet' use train: adapter, bitfit, full, .*lm_head.*partial.*lora"),
    ({"name": "pet", "train": "bitfit"}, {}, "has no bias terms.*add_biases: true"),
    ({"name": "pet", "train": "partial", "delta": {"freeze_layers": 9}}, {}, "strategy.delta.freeze_layers is 9"),
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


# --------------------------------------------------------------------------- generation tasks

ARTICLES = [
    ("the council approved a new park near the river on monday", "council approves riverside park"),
    ("heavy rain flooded several roads in the city centre overnight", "rain floods city roads"),
    ("the local team won the cup final after extra time", "local team wins cup final"),
    ("a new library opened its doors to readers this week", "new library opens"),
]


@pytest.fixture(scope="module")
def summaries(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("summaries")
    for split, rows in (("train", ARTICLES[:2]), ("dev", ARTICLES[2:3]), ("test", ARTICLES)):
        lines = [json.dumps({"text": text, "summary": target}) for text, target in rows]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def generation_experiment(model_dir, data: Path, strategy: dict, metrics=("rouge1", "rouge2", "rougeL", "bleu")):
    raw = {
        "model": {"name": str(model_dir), "max_length": 64},
        "task": {"type": "generation", "target_field": "summary"},
        "data": {"train": str(data / "train.jsonl"), "dev": str(data / "dev.jsonl"), "test": str(data / "test.jsonl")},
        "strategy": strategy,
        "prompt": {"template": "Article: {{ text }}\nSummary:"},
        "train": {"epochs": 1, "batch_size": 2, "learning_rate": 1e-3, "log_to": [], "progress_bar": False},
        "metrics": list(metrics),
    }
    return validate_experiment(raw)


@pytest.mark.parametrize("strategy", [
    {"name": "generate", "k": 1, "generation": {"max_new_tokens": 6}},
    {"name": "sft", "generation": {"max_new_tokens": 6}},
    {"name": "sft", "train": "lora", "delta": {"r": 2}, "generation": {"max_new_tokens": 6}},
])
def test_generation_metrics_flow_into_the_run_directory(llama_dir, summaries, tmp_path, strategy):
    prepared = prepare(generation_experiment(llama_dir, summaries, strategy))
    run_dir = tmp_path / "run"
    execute(prepared, run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert set(metrics) == {"rouge1", "rouge2", "rougeL", "bleu"}
    rows = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == len(ARTICLES) and all(isinstance(r["prediction"], str) for r in rows)
    _, _, predictor = load_run(run_dir)  # the reloaded run generates the same text (greedy)
    assert [o["prediction"] for o in predictor.predict(prepared.splits.test)] == [r["prediction"] for r in rows]


# --------------------------------------------------------------------------- cot

QUESTIONS = [
    {"text": "Can a fish climb a tree?", "label": "no", "rationale": "Fish live in water. Trees stand on land."},
    {"text": "Is the sun hot?", "label": "yes", "rationale": "The sun is a burning star."},
    {"text": "Do cats bark?", "label": "no", "rationale": "Cats meow. Dogs bark."},
    {"text": "Is ice cold?", "label": "yes", "rationale": "Ice is frozen water."},
]
SUMS = [{"text": "What is 5 plus 7?", "label": "12"}, {"text": "What is 20 plus 22?", "label": "42"}]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def cot_experiment(model_dir, tmp_path, strategy: dict, rows=QUESTIONS, task=None, metrics=("accuracy",)):
    data = {"train": write_jsonl(tmp_path / "train.jsonl", rows), "test": write_jsonl(tmp_path / "test.jsonl", rows)}
    raw = {
        "model": {"name": str(model_dir), "max_length": 256},
        "task": task or {"type": "classification", "label_names": ["no", "yes"]},
        "data": data,
        "strategy": {"name": "cot", **strategy},
        "prompt": {"template": "Q: {{ text }}\nA:"},
        "metrics": list(metrics),
    }
    return validate_experiment(raw)


class FakeGenerator:
    """Stands in for sampling: returns scripted chains (in order) and records what it was asked."""

    def __init__(self, chains: list[str]):
        self.chains, self.calls = chains, []

    def __call__(self, model, tokenizer, prompts, options=None, *, samples=1, max_prompt_tokens=None):
        self.calls.append({"prompts": prompts, "options": options, "samples": samples})
        script = iter(self.chains * (len(prompts) * samples))
        return [[next(script) for _ in range(samples)] for _ in prompts]


def run_cot(monkeypatch, tmp_path, exp, chains):
    fake = FakeGenerator(chains)
    monkeypatch.setattr("tunelab.methods.cot.generate", fake)
    prepared = prepare(exp)
    execute(prepared, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    return fake, rows, json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]


def test_self_consistency_votes_over_sampled_chains(llama_dir, tmp_path, monkeypatch):
    chains = ["Fish swim. So the answer is yes.", "They cannot. So the answer is no.", "Hmm, the answer is: yes"]
    exp = cot_experiment(llama_dir, tmp_path, {"k": 2, "self_consistency": 3, "generation": {"temperature": 0.7}})
    fake, rows, metrics = run_cot(monkeypatch, tmp_path, exp, chains)
    assert fake.calls[0]["samples"] == 3 and fake.calls[0]["options"].do_sample  # sampling switched on
    prompt = fake.calls[0]["prompts"][0]
    assert prompt.count("So the answer is") == 2 and any(q["rationale"] in prompt for q in QUESTIONS)  # exemplars
    for row in rows:
        assert row["chains"] == chains and row["answers"] == ["yes", "no", "yes"]
        assert row["prediction"] == "yes" and row["scores"] == pytest.approx({"no": 1 / 3, "yes": 2 / 3})
    assert metrics["accuracy"] == 0.5  # two of the four gold labels are yes


def test_unreadable_chain_falls_back_to_scoring_the_answer_words(llama_dir, tmp_path, monkeypatch):
    seen = []

    def fake_scores(model, tokenizer, requests, **kwargs):
        from tunelab.scoring import CandidateScore

        seen.extend(r.context for r in requests)
        return [[CandidateScore(-2.0, 1), CandidateScore(-1.0, 1)] for _ in requests]  # "yes" is likelier

    monkeypatch.setattr("tunelab.methods.cot.score_requests", fake_scores)
    exp = cot_experiment(llama_dir, tmp_path, {"k": 1})
    _, rows, _ = run_cot(monkeypatch, tmp_path, exp, ["I cannot tell. So the answer is"])
    assert all(row["answers"] == ["yes"] for row in rows)
    assert all(context.endswith("I cannot tell. So the answer is") for context in seen)


def test_zero_shot_cot_reasons_then_answers_in_a_second_step(llama_dir, tmp_path, monkeypatch):
    seen = []

    def fake_scores(model, tokenizer, requests, **kwargs):
        from tunelab.scoring import CandidateScore

        seen.extend(r.context for r in requests)
        return [[CandidateScore(-1.0, 1), CandidateScore(-3.0, 1)] for _ in requests]  # "no" is likelier

    monkeypatch.setattr("tunelab.methods.cot.score_requests", fake_scores)
    exp = cot_experiment(llama_dir, tmp_path, {"mode": "zero_shot"})
    fake, rows, _ = run_cot(monkeypatch, tmp_path, exp, ["The answer is yes, obviously."])
    assert fake.calls[0]["prompts"][0].endswith("A: Let's think step by step.")
    assert seen[0].endswith("Let's think step by step. The answer is yes, obviously.\nTherefore, the answer is")
    assert [row["prediction"] for row in rows] == ["no"] * 4  # scored, not extracted (the paper's two steps)


def test_arithmetic_answers_are_numbers(llama_dir, tmp_path, monkeypatch):
    task = {"type": "generation", "target_field": "label"}
    exp = cot_experiment(llama_dir, tmp_path, {"mode": "zero_shot", "answer": "extract"}, SUMS, task, ["exact_match"])
    _, rows, metrics = run_cot(monkeypatch, tmp_path, exp, ["5 plus 7 makes 12, so the answer is 12."])
    assert [row["prediction"] for row in rows] == ["12", "12"]
    assert metrics["exact_match"] == 0.5


def test_few_shot_cot_needs_rationales_and_says_so_before_any_weight_loads(llama_dir, tmp_path, monkeypatch):
    import tunelab.models
    from tunelab.errors import DataError

    rows = [{k: v for k, v in q.items() if k != "rationale"} for q in QUESTIONS]
    monkeypatch.setattr(tunelab.models, "load_model", lambda *a, **k: pytest.fail("weights loaded"))
    with pytest.raises(DataError, match="no 'rationale' field"):
        prepare(cot_experiment(llama_dir, tmp_path, {"k": 2}, rows))  # check_splits: a sweep stops before its first cell


def test_cot_runs_end_to_end_with_real_generation(llama_dir, tmp_path):
    exp = cot_experiment(llama_dir, tmp_path, {"k": 2, "generation": {"max_new_tokens": 6}})
    prepared = prepare(exp)
    execute(prepared, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert all(row["prediction"] in ("no", "yes") and len(row["chains"]) == 1 for row in rows)
    _, _, predictor = load_run(tmp_path / "run")
    assert [o["prediction"] for o in predictor.predict(prepared.splits.test)] == [r["prediction"] for r in rows]
