"""`pet` with demonstrations (LM-BFF) on a tiny random Llama: what the model reads, who may be a
demonstration, the test-time average over demonstration sets, and a full run that reloads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tunelab.config import validate_experiment
from tunelab.demo import demo_data_dir
from tunelab.errors import ConfigError
from tunelab.methods.pet_demos import DemonstrationSettings, draw_demonstrations
from tunelab.run import execute, load_run, prepare

TEMPLATE = "Review: {{ text }}\nSentiment:"
WORDS = {"negative": " bad", "positive": " good"}


def experiment(model_dir: Path, demonstrations: dict | None = None, max_length: int = 128, **strategy):
    demo = demo_data_dir()
    raw = {
        "model": {"name": str(model_dir), "max_length": max_length},
        "task": {"type": "classification", "label_names": ["negative", "positive"]},
        "data": {"train": str(demo / "sentiment_train.jsonl"), "test": str(demo / "sentiment_test.jsonl"),
                 "k_shot": 4, "max_test": 6},
        "strategy": {"name": "pet", **({"demonstrations": demonstrations} if demonstrations is not None else {}), **strategy},
        "prompt": {"template": TEMPLATE, "verbalizer": WORDS},
        "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3, "log_to": [], "progress_bar": False, "seed": 13},
        "metrics": ["accuracy"],
    }
    return validate_experiment(raw)


def decoded(strategy, features) -> list[str]:
    return [strategy.engine.tokenizer.decode(f["input_ids"], skip_special_tokens=True) for f in features]


def normal(text: str) -> str:
    return " ".join(text.lower().split())  # the MiniLM tokenizer lower-cases and re-spaces punctuation


def render_text(strategy, example, demos, plan, max_length):
    return "".join(strategy.demos.render(strategy.engine, plan, example, demos, max_length))


def test_encoded_inputs_hold_one_filled_in_demonstration_per_label_then_the_query(llama_dir):
    prepared = prepare(experiment(llama_dir, {"per_label": 1}))
    strategy, splits = prepared.strategy, prepared.splits
    strategy.use_demonstrations(splits.train)
    plan = strategy.plan()
    [features] = strategy.encode_sets(plan, splits.test, "test", 1)
    [demos] = strategy.demos.sets(splits.test, 1)
    for text, example, chosen in zip(decoded(strategy, features), splits.test, demos):
        assert sorted(d["label"] for d in chosen) == ["negative", "positive"]
        tokenizer = strategy.engine.tokenizer
        as_read = lambda t: normal(tokenizer.decode(tokenizer(t, add_special_tokens=False)["input_ids"]))  # noqa: E731
        for demo in chosen:  # each demonstration: its prompt, filled with its label's word, in the encoded input
            assert as_read(f"Review: {demo['text']}\nSentiment: {WORDS[demo['label']].strip()}") in normal(text)
        assert normal(text).endswith(as_read(f"Review: {example['text']}\nSentiment:"))  # the query comes last: the answer is the next token
    plain = strategy.encode(plan, splits.test, "test")
    assert all(len(f["input_ids"]) > len(p["input_ids"]) for f, p in zip(features, plain))


def test_a_training_example_is_never_its_own_demonstration():
    pool = [{"text": f"text {i}", "label": "positive" if i % 2 else "negative"} for i in range(6)]
    copy = dict(pool[0], _source="train.jsonl, line 99")  # same text, another line: would leak the label
    pool.append(copy)
    for seed in range(200):
        for query in pool:
            chosen = draw_demonstrations(pool, query, ["negative", "positive"], 2, f"{seed}/{query['text']}")
            assert all(d is not query and d["text"] != query["text"] for d in chosen)
            assert sorted(d["label"] for d in chosen) == ["negative", "negative", "positive", "positive"]
    # with nothing else of a label left, that label gets no demonstration rather than the query itself
    alone = [{"text": "a", "label": "negative"}, {"text": "b", "label": "positive"}]
    assert draw_demonstrations(alone, alone[0], ["negative", "positive"], 1, "k") == [alone[1]]


def test_training_features_carry_other_examples_as_demonstrations(llama_dir):
    prepared = prepare(experiment(llama_dir, {"per_label": 1}))
    strategy, splits = prepared.strategy, prepared.splits
    strategy.use_demonstrations(splits.train)
    [demos] = strategy.demos.sets(splits.train, 1)
    for example, chosen in zip(splits.train, demos):
        assert example not in chosen and all(d in splits.train for d in chosen)


def test_similar_draws_from_the_most_similar_half_of_each_label(llama_dir):
    pool = [{"text": t, "label": label} for t, label in [
        ("cats purr softly", "positive"), ("dogs bark loudly", "positive"), ("trucks roll heavily", "positive"),
        ("planes fly high", "positive"), ("cats nap softly", "negative"), ("ships sail far", "negative"),
        ("trains run late", "negative"), ("bikes ride fast", "negative")]]
    vocabulary = sorted({w for e in pool for w in e["text"].split()} | {"kitten"})

    def bag_of_words(texts):
        return np.array([[t.split().count(w) + 0.01 for w in vocabulary] for t in texts])

    prepared = prepare(experiment(llama_dir, {"selection": "similar", "similar_fraction": 0.25, "test_sets": 5}))
    strategy = prepared.strategy
    strategy.use_demonstrations(pool)
    strategy.demos.embed_fn = bag_of_words  # stands in for minilm-l6
    query = {"text": "cats purr softly kitten"}
    sets = strategy.demos.sets([query], 5)
    for [chosen] in sets:  # top 25% of four examples per label = the single most similar one
        assert sorted(d["text"] for d in chosen) == ["cats nap softly", "cats purr softly"]
    random_sets = DemonstrationSettings(selection="random")
    strategy.settings.demonstrations = random_sets
    strategy.use_demonstrations(pool)
    texts = {d["text"] for s in strategy.demos.sets([query], 20) for d in s[0]}
    assert len(texts) > 2  # random draws reach beyond the nearest ones


def test_long_demonstrations_are_cut_never_the_query(llama_dir):
    prepared = prepare(experiment(llama_dir, {"per_label": 1}, max_length=48))
    strategy, splits = prepared.strategy, prepared.splits
    long_pool = [{"text": " ".join(["word"] * 60) + f" {label}", "label": label} for label in ("negative", "positive")]
    strategy.use_demonstrations(long_pool)
    query = {"text": "The query keeps every one of its words intact here"}
    [[demos]] = strategy.demos.sets([query], 1)
    plan = strategy.plan()
    text = render_text(strategy, query, demos, plan, 48)
    tokens = strategy.engine.count_tokens(text)
    assert tokens <= 48 - 2
    assert text.endswith("Review: The query keeps every one of its words intact here\nSentiment:")
    assert text.count("Sentiment: bad") == 1 and text.count("Sentiment: good") == 1  # both kept, shortened
    [features] = strategy.encode_sets(plan, [query], "test", 1)
    assert len(features[0]["input_ids"]) <= 48


def test_prediction_averages_the_label_distributions_of_the_demonstration_sets(llama_dir, tmp_path):
    from tunelab.methods.pet import PetPredictor

    prepared = prepare(experiment(llama_dir, {"per_label": 1, "test_sets": 3}))
    strategy, splits = prepared.strategy, prepared.splits
    strategy.use_demonstrations(splits.train)
    plan = strategy.plan()
    loaded = strategy.load_base()
    predictor = PetPredictor(strategy, strategy.wrap(loaded.model, plan), loaded, plan)
    rows = [dict(e, label=None) for e in splits.test]
    sets = strategy.encode_sets(plan, rows, "prediction", 3)
    per_set = torch.stack([predictor.label_logits(features).softmax(-1) for features in sets])  # (3, N, L)
    assert not torch.allclose(per_set[0], per_set[1])  # different demonstrations, different scores
    outputs = predictor.predict(splits.test)
    mean = per_set.mean(0)
    for row, out in zip(mean, outputs):
        assert [out["scores"]["negative"], out["scores"]["positive"]] == pytest.approx(row.tolist(), abs=1e-6)
    assert [o["scores"] for o in predictor.predict(splits.test[::-1])][::-1] == [o["scores"] for o in outputs]


def test_pet_with_demonstrations_runs_saves_and_reloads(llama_dir, tmp_path):
    config = experiment(llama_dir, {"per_label": 1, "test_sets": 2})
    run_dir = tmp_path / "run"
    metrics = execute(prepare(config), run_dir)
    assert metrics["num_test"] == 6 and "accuracy" in metrics["test"]
    plan = json.loads((run_dir / "prompt.json").read_text())
    assert len(plan["pool"]) == 8 and {e["label"] for e in plan["pool"]} == {"negative", "positive"}
    saved = [json.loads(line)["scores"] for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    _, strategy, predictor = load_run(run_dir)
    again = [o["scores"] for o in predictor.predict(prepare(config).splits.test)]
    for a, b in zip(saved, again):
        assert a == pytest.approx(b, abs=1e-5)


@pytest.mark.parametrize("demonstrations, message", [
    ({"per_label": 0}, "per_label"),
    ({"selection": "nearest"}, "selection"),
    ({"test_set": 4}, "test_set"),
])
def test_bad_demonstration_settings_fail_before_any_model(llama_dir, demonstrations, message):
    with pytest.raises(ConfigError, match=message):
        prepare(experiment(llama_dir, demonstrations))


def test_masked_lm_demonstrations_fill_the_mask_with_the_label_word(tmp_path, bert_tokenizer):
    from transformers import BertForMaskedLM

    from conftest import tiny_bert_config

    torch.manual_seed(0)
    BertForMaskedLM(tiny_bert_config()).save_pretrained(tmp_path / "mlm")
    bert_tokenizer.save_pretrained(tmp_path / "mlm")
    config = experiment(tmp_path / "mlm", {"per_label": 1})
    config.prompt = {"template": "{{ text }} It was {{ mask }}.", "verbalizer": WORDS}
    prepared = prepare(config)
    strategy, splits = prepared.strategy, prepared.splits
    strategy.use_demonstrations(splits.train)
    [features] = strategy.encode_sets(strategy.plan(), splits.test[:3], "test", 1)
    [demos] = strategy.demos.sets(splits.test[:3], 1)
    for feature, chosen, text in zip(features, demos, decoded(strategy, features)):
        assert feature["input_ids"].count(bert_tokenizer.mask_token_id) == 1  # only the query's answer is masked
        assert feature["input_ids"][feature["answer_pos"]] == bert_tokenizer.mask_token_id
        for demo in chosen:
            assert f"it was {WORDS[demo['label']].strip()}." in normal(text)
