"""Automatic prompts on tiny random models: generated templates (sandboxed), label words (multi-token
scoring, dev pruning), both for `pet` too, and their record in the cell and the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_prompt_strategies import NEG, POS, WORDS, data_dir, experiment, run, tiny_lm_dir, write_jsonl  # noqa: F401
from tunelab.errors import ConfigError
from tunelab.prompts.autotemplate import CueSearch, TemplateGeneration
from tunelab.run import prepare

SEARCH = {"candidates": ["bad", "good", "dull", "fine"], "dev_top_n": 2}


def lm_and_tokenizer(model_dir):
    from transformers import AutoTokenizer, LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)


# --------------------------------------------------------------------------- generated templates


def test_cue_scores_are_the_formula_on_unpadded_forward_passes(tiny_lm_dir):
    """score = mean_i log p(cue | x_i) + mean_i log softmax over label words at y_i, checked per candidate."""
    model, tokenizer = lm_and_tokenizer(tiny_lm_dir)
    examples = [{"text": t, "label": "positive"} for t in POS[:2]] + [{"text": t, "label": "negative"} for t in NEG[:2]]
    verbalizer = {"negative": [" bad"], "positive": [" good"]}
    search = CueSearch(model, tokenizer, examples, "{{ text }}", ["negative", "positive"], verbalizer,
                       TemplateGeneration(max_tokens=2, beam=2, expand=3))
    found = search.run()
    assert len(found) >= 3 and [f["score"] for f in found] == sorted((f["score"] for f in found), reverse=True)
    word_ids = [tokenizer(" bad", add_special_tokens=False)["input_ids"][0], tokenizer(" good", add_special_tokens=False)["input_ids"][0]]
    for candidate in found[:3]:
        fluency, label = [], []
        for example in examples:
            x = search.inputs[examples.index(example)]  # the same input ids (BOS as the scorer adds it)
            ids = torch.tensor([x + candidate["tokens"]])
            with torch.no_grad():
                logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)  # (T, V)
            fluency.append(sum(float(logprobs[len(x) - 1 + j, t]) for j, t in enumerate(candidate["tokens"])))
            z = logprobs[-1, word_ids]
            label.append(float(torch.log_softmax(z, -1)[["negative", "positive"].index(example["label"])]))
        assert candidate["fluency"] == pytest.approx(np.mean(fluency), abs=1e-4)
        assert candidate["label"] == pytest.approx(np.mean(label), abs=1e-4)
        assert candidate["score"] == pytest.approx(candidate["fluency"] + candidate["label"], abs=1e-6)


def test_generated_templates_are_rendered_in_the_sandbox_and_bad_ones_rejected(tmp_path, tiny_lm_dir, data_dir, monkeypatch):
    """A candidate that trips the sandbox, reads the label or is not valid Jinja never reaches the dev choice."""
    cues = [" {{ text.__class__.__mro__[1].__subclasses__() }}", " {{ label }} was", " {% for x in %}", " All in all, it was"]
    monkeypatch.setattr(CueSearch, "run", lambda self: [
        {"cue": c, "tokens": [], "score": -float(i), "fluency": -float(i), "label": 0.0} for i, c in enumerate(cues)])
    config = experiment(tmp_path, tiny_lm_dir, data_dir, {"name": "zero_shot", "generate_templates": {"top_n": 3}},
                        prompt={"verbalizer": WORDS})
    run(config, tmp_path / "run")
    record = json.loads((tmp_path / "run" / "prompt_search.json").read_text())
    generated = record["generated_templates"]
    reasons = {c["template"]: c.get("rejected", "") for c in generated["candidates"]}
    assert "unsafe operation, blocked by the sandbox" in reasons["{{ text }}" + cues[0]]
    assert "reads fields ['label', 'text']" in reasons["{{ text }}" + cues[1]]
    assert "Jinja syntax error" in reasons["{{ text }}" + cues[2]]
    assert generated["kept"] == ["{{ text }} All in all, it was"]
    # the dev choice saw the user's (default) template and the one valid generated template, nothing else
    assert [t["template"] for t in record["trials"]] == [None, "{{ text }} All in all, it was"]
    plan = json.loads((tmp_path / "run" / "prompt.json").read_text())
    assert plan["prompt"]["template"] == record["trials"][record["chosen"]]["template"]


def test_template_generation_without_a_dev_split_is_refused_before_the_model_loads(tmp_path, tiny_lm_dir, data_dir):
    config = experiment(tmp_path, tiny_lm_dir, data_dir, {"name": "zero_shot", "generate_templates": {}},
                        prompt={"verbalizer": WORDS}, data={"dev": None})
    prepared = prepare(config)
    with pytest.raises(ConfigError, match="line \\d+: choosing a template needs a dev split"):
        prepared.strategy.check_data(prepared.splits)
    assert prepared.strategy.engine().model is None


# --------------------------------------------------------------------------- label words


@pytest.mark.parametrize("word_score", ["mean", "sum"])
def test_multi_token_words_score_the_mean_or_sum_of_their_tokens(tmp_path, tiny_lm_dir, data_dir, word_score):
    """The search's (N, W) matrix for a two-token word is the mean (or sum) of its tokens' log-probs after the prompt."""
    from tunelab.prompts.plan import load_lm
    from tunelab.prompts.search import LabelWordSearch, search_plan_words

    config = experiment(tmp_path, tiny_lm_dir, data_dir, {"name": "zero_shot"})
    prepared = prepare(config)
    engine, model = prepared.strategy.engine(), None
    engine.model = model = load_lm(config).model
    plan = prepared.strategy.base_plan(prepared.splits)
    tokenizer, train = engine.tokenizer, prepared.splits.train
    words = ["not good", "bad", "good", "very bad"]
    assert len(tokenizer(" not good", add_special_tokens=False)["input_ids"]) == 2
    seen = {}
    original = engine.word_scores
    engine.word_scores = lambda p, ex, ws: seen.setdefault("scores", original(p, ex, ws))
    search_plan_words(engine, plan, train, LabelWordSearch(candidates=words, word_score=word_score))
    prompt = engine.build(plan, train[:1])[0].text  # ends "Sentiment:", so the word takes a leading space
    from tunelab.scoring import bos_to_add

    context = bos_to_add(tokenizer) + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target = tokenizer(" not good", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=torch.tensor([context + target])).logits[0].float(), -1)
    per_token = [float(logprobs[len(context) - 1 + j, t]) for j, t in enumerate(target)]
    expected = np.mean(per_token) if word_score == "mean" else np.sum(per_token)
    assert seen["scores"][0, 0] == pytest.approx(expected, abs=1e-4)


def dev_planted_for(tmp_path, tiny_lm_dir, data_dir, verbalizers: list[dict], winner: int):
    """Rewrite dev (test) so that only verbalizer `winner` (the other one) is right where the two disagree."""
    from tunelab.prompts.plan import load_lm

    config = experiment(tmp_path, tiny_lm_dir, data_dir, {"name": "zero_shot"})
    prepared = prepare(config)
    engine = prepared.strategy.engine()
    engine.model = load_lm(config).model
    base = prepared.strategy.base_plan(prepared.splits)
    texts = [{"text": t} for t in POS + NEG + ["so so", "not sure", "a film", "it exists"]]
    guesses = [[o["prediction"] for o in engine.predict(base.replace(verbalizer=v), texts)] for v in verbalizers]
    differ = [i for i in range(len(texts)) if guesses[0][i] != guesses[1][i]]
    assert differ, "the two verbalizers should disagree somewhere on a random model"
    write_jsonl(data_dir / "dev.jsonl", [dict(texts[i], label=guesses[winner][i]) for i in differ])
    write_jsonl(data_dir / "test.jsonl", [dict(texts[i], label=guesses[1 - winner][i]) for i in differ])


def test_dev_split_picks_the_label_words(tmp_path, tiny_lm_dir, data_dir):
    """dev_top_n: 2 verbalizers from the train ranking are scored on dev; the planted dev winner is used."""
    from tunelab.prompts.plan import load_lm
    from tunelab.prompts.search import LabelWordSearch, search_plan_words

    config = experiment(tmp_path, tiny_lm_dir, data_dir, {"name": "zero_shot"})
    prepared = prepare(config)
    engine = prepared.strategy.engine()
    engine.model = load_lm(config).model
    _, found = search_plan_words(engine, prepared.strategy.base_plan(prepared.splits), prepared.splits.train,
                                 LabelWordSearch(**SEARCH))
    verbalizers = found["verbalizers"]
    assert len(verbalizers) == 2 and verbalizers[0] != verbalizers[1]
    dev_planted_for(tmp_path, tiny_lm_dir, data_dir, verbalizers, winner=1)
    result = run(experiment(tmp_path, tiny_lm_dir, data_dir, {"name": "zero_shot", "search_label_words": SEARCH}),
                 tmp_path / "run")
    plan = json.loads((tmp_path / "run" / "prompt.json").read_text())
    record = plan["search"]["trials"][0]["label_words"]
    assert [v["words"] for v in record["verbalizers"]] == verbalizers
    assert [v["dev"]["accuracy"] for v in record["verbalizers"]] == [0.0, 1.0]
    assert plan["verbalizer"] == record["chosen"] == verbalizers[1]
    assert result["dev"]["accuracy"] == 1.0 and result["test"]["accuracy"] == 0.0  # test never chose


def test_dev_pruning_compares_one_word_per_label():
    from tunelab.prompts.search import LabelWordSearch

    with pytest.raises(ValueError, match="set top_n: 1"):
        LabelWordSearch(top_n=2, dev_top_n=3)


# --------------------------------------------------------------------------- pet


def test_pet_trains_with_the_dev_chosen_template_and_words(tmp_path, tiny_lm_dir, data_dir):
    config = experiment(tmp_path, tiny_lm_dir, data_dir, {
        "name": "pet", "search_label_words": SEARCH, "generate_templates": {"top_n": 2, "max_tokens": 2, "beam": 2}},
        prompt={"verbalizer": WORDS}, train={"epochs": 1, "batch_size": 4, "progress_bar": False, "log_to": []})
    run(config, tmp_path / "run")
    record = json.loads((tmp_path / "run" / "prompt_search.json").read_text())
    plan = json.loads((tmp_path / "run" / "prompt.json").read_text())
    chosen = record["trials"][record["chosen"]]
    assert len(record["trials"]) == 1 + len(record["generated_templates"]["kept"]) >= 2
    assert all(len(t["label_words"]["verbalizers"]) == 2 for t in record["trials"])
    assert plan["prompt"]["template"] == chosen["template"] and plan["verbalizer"] == chosen["label_words"]["chosen"]
    best = max(t["dev"]["accuracy"] for t in record["trials"])
    assert chosen["dev"]["accuracy"] == best
    # the trained predictor reads the chosen words: reloading it gives the same predictions
    from tunelab.run import load_run

    _, _, predictor = load_run(tmp_path / "run")
    assert predictor.plan.verbalizer == plan["verbalizer"]


def test_pet_search_refuses_a_masked_lm_before_training(tmp_path, data_dir, bert_tokenizer):
    from transformers import BertForMaskedLM

    from conftest import save_tiny, tiny_bert_config

    masked = save_tiny(BertForMaskedLM(tiny_bert_config()), bert_tokenizer, tmp_path / "mlm")
    config = experiment(tmp_path, masked, data_dir, {"name": "pet", "search_label_words": SEARCH},
                        prompt={"template": "{{ text }} It was {{ mask }}.", "verbalizer": WORDS})
    with pytest.raises(ConfigError, match="strategy.search_label_words.*causal LM's next-token logits"):
        prepare(config)


def test_pet_search_without_a_dev_split_stops_before_the_weights_load(tmp_path, tiny_lm_dir, data_dir, monkeypatch):
    import tunelab.models

    monkeypatch.setattr(tunelab.models, "load_model", lambda *a, **k: pytest.fail("weights loaded"))
    config = experiment(tmp_path, tiny_lm_dir, data_dir, {"name": "pet", "search_label_words": SEARCH},
                        prompt={"verbalizer": WORDS}, data={"dev": None})
    with pytest.raises(ConfigError, match="prompt search chooses on the dev split"):
        run(config, tmp_path / "run")
