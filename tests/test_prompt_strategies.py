"""zero_shot / few_shot on a tiny random Llama loaded by directory: end to end, checks, search, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import tiny_llama_config
from tunelab.config import load_experiment
from tunelab.errors import ConfigError
from tunelab.prompts import DemonstrationsDroppedWarning, build_prompt
from tunelab.run import execute, load_run, prepare
from tunelab.scoring import ScoreRequest, naive_score

TEMPLATE = "Review: {{ text }}\nSentiment:"
WORDS = {"negative": " bad", "positive": " good"}
POS = ["a fine warm film", "great acting and a clever plot", "I loved every minute", "funny and moving",
       "superb music", "a joy to watch", "brilliant and kind", "the best film this year"]
NEG = ["dull and long", "the plot makes no sense", "I walked out early", "wooden acting",
       "a boring mess", "cold and cruel", "awful sound", "the worst film this year"]


def rows(texts_labels, **extra):
    return [{"text": t, "label": y, **extra} for t, y in texts_labels]


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory, bert_tokenizer) -> Path:
    """A tiny random Llama saved with the MiniLM tokenizer, so `load_model` loads it by directory."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(tiny_llama_config(initializer_range=0.3)).save_pretrained(directory)
    bert_tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_chat_dir(tmp_path_factory, tiny_lm_dir) -> Path:
    """The same model with a chat template on its tokenizer."""
    import shutil

    from transformers import AutoTokenizer

    directory = tmp_path_factory.mktemp("tiny-chat")
    for item in tiny_lm_dir.iterdir():
        shutil.copy(item, directory / item.name)
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    # Jinja drops a template's final newline, so the reply cue's newline is an expression
    tokenizer.chat_template = "{% for m in messages %}USER SAYS: {{ m['content'] }}\n{% endfor %}BOT SAYS:{{ '\\n' }}"
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture
def data_dir(tmp_path) -> Path:
    labelled = [(t, "positive") for t in POS] + [(t, "negative") for t in NEG]
    write_jsonl(tmp_path / "train.jsonl", rows(labelled[::2]))
    write_jsonl(tmp_path / "dev.jsonl", rows(labelled[1::4]))
    write_jsonl(tmp_path / "test.jsonl", rows([("a warm clever joy", "positive"), ("a cruel boring mess", "negative"),
                                                ("funny music", "positive"), ("dull wooden plot", "negative")]))
    return tmp_path


def experiment(tmp_path: Path, model_dir: Path, data_dir: Path, strategy: dict, prompt: dict | None = None, **sections):
    """Write an experiment file (so errors carry file and line) and load it."""
    raw = {
        "name": "icl-test",
        "model": {"name": str(model_dir), "max_length": 128},
        "task": {"type": "classification", "label_names": ["negative", "positive"]},
        "data": {split: str(data_dir / f"{split}.jsonl") for split in ("train", "dev", "test")},
        "strategy": strategy,
        "prompt": {"template": TEMPLATE, "verbalizer": dict(WORDS)} if prompt is None else prompt,
        "train": {"eval_batch_size": 4},
        "metrics": ["accuracy"],
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return load_experiment(path)


def run(config, out: Path) -> dict:
    return execute(prepare(config), out)


def predictions(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- end to end


def test_zero_shot_end_to_end_and_reload(tmp_path, tiny_lm_dir, data_dir):
    config = experiment(tmp_path, tiny_lm_dir, data_dir, {"name": "zero_shot"})
    result = run(config, tmp_path / "run")
    written = predictions(tmp_path / "run")
    # the reported accuracy is the share of written predictions that match their labels
    assert result["test"]["accuracy"] == pytest.approx(np.mean([p["prediction"] == p["label"] for p in written]))
    plan = json.loads((tmp_path / "run" / "prompt.json").read_text())
    assert plan["prompt"]["template"] == TEMPLATE and plan["demonstrations"] == []
    assert plan["verbalizer"] == {"negative": [" bad"], "positive": [" good"]}
    assert all(set(p["scores"]) == {"negative", "positive"} for p in written)
    assert json.loads((tmp_path / "run" / "costs.json").read_text())["trainable_params"] == 0
    # `tunelab evaluate` / `predict` rebuild the same predictor from the run directory
    _, _, predictor = load_run(tmp_path / "run")
    again = predictor.predict([dict(text=p["text"]) for p in written])
    assert [a["prediction"] for a in again] == [p["prediction"] for p in written]
    np.testing.assert_allclose([a["scores"]["positive"] for a in again], [p["scores"]["positive"] for p in written], atol=1e-5)


def test_scores_are_the_naive_loglikelihood_of_the_full_prompt(tmp_path, tiny_lm_dir, data_dir, bert_tokenizer):
    """few_shot's prefix-cached scores equal one uncached pass over the whole rendered prompt."""
    from transformers import AutoModelForCausalLM

    config = experiment(tmp_path, tiny_lm_dir, data_dir, {"name": "few_shot", "k": 3, "selection": "random"})
    run(config, tmp_path / "run")
    plan = json.loads((tmp_path / "run" / "prompt.json").read_text())
    demos = plan["demonstrations"]
    train_texts = {r["text"] for r in map(json.loads, (data_dir / "train.jsonl").read_text().splitlines())}
    assert len(demos) == 3 and all(d["text"] in train_texts for d in demos)  # from train, never test
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    settings = prepare(config).strategy.prompt
    for row in predictions(tmp_path / "run"):
        pairs = [(d, WORDS[d["label"]].strip()) for d in demos]
        text = build_prompt(settings, {"text": row["text"]}, pairs)
        assert text.count("Sentiment:") == 4
        naive = naive_score(model, bert_tokenizer, [ScoreRequest(text, [" bad", " good"])])[0]
        assert row["scores"]["negative"] == pytest.approx(naive[0].logprob_sum, abs=1e-4)
        assert row["scores"]["positive"] == pytest.approx(naive[1].logprob_sum, abs=1e-4)


def test_the_start_all_queries_share_is_cached_with_the_prefix(tmp_path, tiny_lm_dir, data_dir, bert_tokenizer):
    from transformers import AutoModelForCausalLM

    from tunelab.prompts.engine import PromptEngine

    config = experiment(tmp_path, tiny_lm_dir, data_dir, {"name": "few_shot", "k": 2})
    prepared = prepare(config)
    plan, test = prepared.strategy.base_plan(prepared.splits), prepared.splits.test
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    engine = PromptEngine(bert_tokenizer, model, max_length=128)
    rendered = engine.build(plan, test)
    assert engine.shared_start(rendered[0].prefix, [r.query for r in rendered]) == "Review:"
    assert engine.shared_start("", ["Review: a", "Reviewer b"]) == ""  # no shared whole word
    with_start = engine.candidate_scores(plan, rendered)
    assert engine.stats.prefix_cache_fallbacks == 0
    assert engine.stats.prefix_tokens == len(bert_tokenizer(rendered[0].prefix + "Review:", add_special_tokens=False)["input_ids"]) - 1
    engine.shared_start = lambda prefix, queries: ""
    np.testing.assert_allclose(np.stack(engine.candidate_scores(plan, rendered)), np.stack(with_start), atol=1e-5)


def test_few_shot_balanced_and_one_shot(tmp_path, tiny_lm_dir, data_dir):
    config = experiment(tmp_path, tiny_lm_dir, data_dir, {"name": "few_shot", "k": 4, "selection": "balanced"})
    run(config, tmp_path / "four")
    demos = json.loads((tmp_path / "four" / "prompt.json").read_text())["demonstrations"]
    assert sorted(d["label"] for d in demos) == ["negative", "negative", "positive", "positive"]
    config = experiment(tmp_path, tiny_lm_dir, data_dir, {"name": "few_shot", "k": 1})
    run(config, tmp_path / "one")
    assert len(json.loads((tmp_path / "one" / "prompt.json").read_text())["demonstrations"]) == 1


def test_nearest_selection_uses_the_most_similar_training_examples(tmp_path, tiny_lm_dir, data_dir, monkeypatch):
    import tunelab.prompts.engine as engine_module

    vocabulary = sorted({w for t in POS + NEG + ["a warm clever joy"] for w in t.split()})

    def bag_of_words(texts):  # stands in for minilm-l6: shared words make texts similar
        return np.array([[t.split().count(w) for w in vocabulary] for t in texts], dtype=float)

    monkeypatch.setattr(engine_module, "make_embedder", lambda *a, **k: bag_of_words)
    config = experiment(tmp_path, tiny_lm_dir, data_dir, {"name": "few_shot", "k": 1, "selection": "nearest"})
    strategy = prepare(config)
    blocks = strategy.strategy.preview(strategy.splits, 4)
    first = next(b for b in blocks if "a warm clever joy" in b)
    assert "a joy to watch" in first or "great acting and a clever plot" in first or "a fine warm film" in first
    run(config, tmp_path / "run")
    plan = json.loads((tmp_path / "run" / "prompt.json").read_text())
    assert plan["selection"] == "nearest" and len(plan["pool"]) == 8


def test_multiple_choice(tmp_path, tiny_lm_dir):
    questions = [{"text": f"Which date comes after 0{d}/01/2020?", "choices": [f"0{d + 1}/01/2020", f"0{d}/12/1999", "never"],
                  "label": f"0{d + 1}/01/2020"} for d in range(1, 6)]
    write_jsonl(tmp_path / "train.jsonl", questions[:3])
    write_jsonl(tmp_path / "test.jsonl", questions[3:])
    config = experiment(tmp_path, tiny_lm_dir, tmp_path, {"name": "few_shot", "k": 2, "length_norm": "token"},
                        prompt={"template": "Q: {{ text }}\nA:"}, task={"type": "multiple_choice", "label_names": None},
                        data={"dev": None})
    run(config, tmp_path / "run")
    for row in predictions(tmp_path / "run"):
        assert set(row["scores"]) == set(row["choices"]) and row["prediction"] in row["choices"]
        assert row["prediction"] == max(row["scores"], key=row["scores"].get)


def test_chat_template_is_applied_when_the_tokenizer_has_one(tmp_path, tiny_chat_dir, data_dir, capsys):
    from tunelab.cli import main

    experiment(tmp_path, tiny_chat_dir, data_dir, {"name": "zero_shot"})
    assert main(["prompt", str(tmp_path / "experiment.yaml"), "--n", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("USER SAYS: Review: a warm clever joy\nSentiment:\nBOT SAYS:\n") == 1
    assert "'bad' | 'good'" in out  # after "BOT SAYS:\n" the words lose their leading space
    assert main(["prompt", str(tmp_path / "experiment.yaml"), "prompt.use_chat_template=false"]) == 0
    assert "USER SAYS" not in capsys.readouterr().out


def test_prompt_command_shows_a_sweep_entry_with_its_own_model_and_settings(tmp_path, tiny_lm_dir, data_dir, capsys,
                                                                          monkeypatch):
    from tunelab import run as run_module
    from tunelab.cli import main

    sweep = {"seeds": [1], "strategies": [{"name": "full"}, {"name": "few_shot", "id": "icl", "settings": {"k": 2},
                                                             "model": {"name": str(tiny_lm_dir)}}]}
    experiment(tmp_path, "minilm-l6", data_dir, {"name": "full"}, sweep=sweep)  # a head-based top level, as init writes
    path = str(tmp_path / "experiment.yaml")
    assert main(["prompt", path, "--entry", "icl", "--n", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("=== prompt") == 1 and "2 demonstrations" in out
    # a wrong choice is named before any model loads
    monkeypatch.setattr(run_module, "prepare", lambda config: pytest.fail("weights loaded before the check"))
    for argv, expected in (([], "pass --entry with one of this file's sweep entries that prompt: icl"),
                           (["--entry", "full"], "--entry full: strategy 'full' has no prompt to show"),
                           (["--entry", "icl2"], "--entry icl2: no sweep entry or cell")):
        assert main(["prompt", path, *argv]) == 2
        assert expected in capsys.readouterr().err


def test_prompt_command_prints_rendered_prompts(tmp_path, tiny_lm_dir, data_dir, capsys):
    from tunelab.cli import main

    experiment(tmp_path, tiny_lm_dir, data_dir, {"name": "few_shot", "k": 2})
    assert main(["prompt", str(tmp_path / "experiment.yaml"), "--n", "3", "strategy.selection=random"]) == 0
    out = capsys.readouterr().out
    assert out.count("=== prompt") == 3 and "Review: funny music\nSentiment:" in out
    assert out.count("Sentiment: good") + out.count("Sentiment: bad") == 6  # 2 demonstrations per prompt
    assert main(["prompt", str(tmp_path / "experiment.yaml"), "strategy.name=full"]) == 2


def test_demonstrations_that_do_not_fit_are_dropped_with_a_warning(tmp_path, tiny_lm_dir, data_dir):
    config = experiment(tmp_path, tiny_lm_dir, data_dir, {"name": "few_shot", "k": 8}, model={"max_length": 40})
    with pytest.warns(DemonstrationsDroppedWarning, match="dropped"):
        run(config, tmp_path / "run")


# --------------------------------------------------------------------------- bad input, before any model


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any attempt to load weights fails the test: every check must come first."""
    import tunelab.models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(tunelab.models, "load_model", refuse)


BAD_INPUTS = {
    "template field the data lacks": ({"name": "zero_shot"}, {"prompt": {"template": "{{ title }}: {{ text }}"}}, "'title'"),
    "verbalizer label outside the task": ({"name": "zero_shot"}, {"prompt": {"template": TEMPLATE, "verbalizer": {"negative": "bad", "great": "good"}}}, "'great'"),
    "empty label word": ({"name": "zero_shot"}, {"prompt": {"verbalizer": {"negative": " ", "positive": "good"}}}, "non-empty"),
    "prompt longer than the context": ({"name": "zero_shot"}, {"model": {"max_length": 6}}, "raise model.max_length"),
    "model without an LM head": ({"name": "zero_shot"}, {"model": {"name": "minilm-l6"}}, "causal"),
    "unknown strategy setting": ({"name": "few_shot", "kk": 2}, {}, "unknown key 'strategy.kk'"),
    "bad template syntax": ({"name": "zero_shot", "templates": ["{{ text "]}, {"prompt": {}}, "Jinja syntax"),
    "template choice without dev": ({"name": "zero_shot", "templates": ["{{ text }}", "{{ text }}!"]}, {"prompt": {}, "data": {"dev": None}}, "dev split"),
    "few-shot without train": ({"name": "few_shot"}, {"data": {"train": None}}, "data.train"),
    "calibrate with nearest": ({"name": "few_shot", "selection": "nearest", "calibrate": True}, {}, "same demonstrations"),
    "template and templates": ({"name": "zero_shot", "templates": ["{{ text }}"]}, {}, "either prompt.template"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_config_error_before_any_model_loads(case, tmp_path, tiny_lm_dir, data_dir, no_model_loads):
    strategy, sections, message = BAD_INPUTS[case]
    with pytest.raises(ConfigError, match=message) as err:
        config = experiment(tmp_path, tiny_lm_dir, data_dir, strategy, **sections)
        run(config, tmp_path / "run")
    assert "experiment.yaml" in str(err.value) or "_source" in str(err.value) or ".jsonl:" in str(err.value)
    assert not (tmp_path / "run").exists()


def test_bad_multiple_choice_settings(tmp_path, tiny_lm_dir, no_model_loads):
    write_jsonl(tmp_path / "test.jsonl", [{"text": "pick", "choices": ["a", "b"], "label": "a"}])
    for strategy, prompt, message in [({"name": "zero_shot", "calibrate": True}, {}, "calibration"),
                                      ({"name": "zero_shot"}, {"verbalizer": {"a": "x", "b": "y"}}, "remove prompt.verbalizer")]:
        with pytest.raises(ConfigError, match=message):
            config = experiment(tmp_path, tiny_lm_dir, tmp_path, strategy, prompt=prompt,
                                task={"type": "multiple_choice", "label_names": None}, data={"train": None, "dev": None})
            run(config, tmp_path / "run")


# --------------------------------------------------------------------------- calibration and search


def test_calibration_divides_out_the_content_free_distribution(tmp_path, tiny_lm_dir, data_dir):
    plain = experiment(tmp_path, tiny_lm_dir, data_dir, {"name": "zero_shot"})
    run(plain, tmp_path / "plain")
    calibrated = experiment(tmp_path, tiny_lm_dir, data_dir, {"name": "zero_shot", "calibrate": True})
    run(calibrated, tmp_path / "cal")
    p_cf = np.array(json.loads((tmp_path / "cal" / "prompt.json").read_text())["calibration"])
    assert p_cf.shape == (2,) and p_cf.sum() == pytest.approx(1.0)
    for raw, cal in zip(predictions(tmp_path / "plain"), predictions(tmp_path / "cal")):
        logits = np.array([raw["scores"]["negative"], raw["scores"]["positive"]])
        p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        expected = (p / p_cf) / (p / p_cf).sum()  # Zhao et al. (2021) with W = diag(p_cf)^-1, b = 0
        assert [cal["scores"]["negative"], cal["scores"]["positive"]] == pytest.approx(np.log(expected).tolist(), abs=1e-6)
    # the content-free input itself comes out uniform
    _, _, predictor = load_run(tmp_path / "cal")
    scores = predictor.predict([{"text": "N/A"}])[0]["scores"]
    assert scores["negative"] == pytest.approx(math.log(0.5), abs=1e-6) == pytest.approx(scores["positive"], abs=1e-6)


def test_template_is_chosen_by_dev_score_never_test(tmp_path, tiny_lm_dir, data_dir):
    """Dev labels are planted to agree with the second template: it must win, whatever test says."""
    templates = ["Review: {{ text }}\nSentiment:", "{{ text }} All in all, it was"]
    config = experiment(tmp_path, tiny_lm_dir, data_dir, {"name": "zero_shot", "templates": templates}, prompt={"verbalizer": WORDS})
    prepared = prepare(config)
    strategy = prepared.strategy
    from tunelab.prompts.plan import load_lm

    engine = strategy.engine()
    engine.model = load_lm(config).model
    base = strategy.base_plan(prepared.splits)
    dev = [{"text": t} for t in POS + NEG]
    guesses = [[o["prediction"] for o in engine.predict(base.with_template(t), dev)] for t in templates]
    differ = [i for i in range(len(dev)) if guesses[0][i] != guesses[1][i]]
    assert differ, "the two templates should disagree somewhere on a random model"
    write_jsonl(data_dir / "dev.jsonl", [dict(dev[i], label=guesses[1][i]) for i in differ])
    write_jsonl(data_dir / "test.jsonl", [dict(dev[i], label=guesses[0][i]) for i in differ])  # test favours the first
    result = run(experiment(tmp_path, tiny_lm_dir, data_dir, {"name": "zero_shot", "templates": templates},
                            prompt={"verbalizer": WORDS}), tmp_path / "run")
    plan = json.loads((tmp_path / "run" / "prompt.json").read_text())
    assert plan["search"]["chosen"] == 1 and plan["prompt"]["template"] == templates[1]
    assert [t["dev"]["accuracy"] for t in plan["search"]["trials"]] == [0.0, 1.0]
    assert result["dev"]["accuracy"] == 1.0 and result["test"]["accuracy"] == 0.0


@pytest.mark.parametrize("search", [{"candidates": ["bad", "good", "fine", "dull"], "top_n": 2}, {"vocabulary_top_k": 5}])
def test_label_word_search_is_recorded_and_used(tmp_path, tiny_lm_dir, data_dir, search):
    config = experiment(tmp_path, tiny_lm_dir, data_dir, {"name": "few_shot", "k": 2, "search_label_words": search})
    run(config, tmp_path / "run")
    plan = json.loads((tmp_path / "run" / "prompt.json").read_text())
    record = plan["search"]["trials"][0]["label_words"]
    assert plan["verbalizer"] == record["chosen"]
    words = [w for ws in plan["verbalizer"].values() for w in ws]
    assert len(words) == len(set(words)) == 2 * search.get("top_n", 1)
    assert set(words) <= set(record["candidates"])
    if "candidates" not in search:  # vocabulary tokens read as one token after the prompt
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
        assert all(len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1 for w in words)
    # the demonstrations' answers use the searched words
    prompt = predictions(tmp_path / "run")
    assert prompt and all(set(p["scores"]) == {"negative", "positive"} for p in prompt)


def test_search_matches_the_ranking_of_the_scored_candidates(tmp_path, tiny_lm_dir, data_dir):
    """The candidates-mode search is `prompts.search_label_words` over the engine's own word scores."""
    from tunelab.prompts.search import LabelWordSearch, search_plan_words
    from tunelab.prompts.plan import load_lm
    from tunelab.prompts import search_label_words

    config = experiment(tmp_path, tiny_lm_dir, data_dir, {"name": "zero_shot"})
    prepared = prepare(config)
    engine = prepared.strategy.engine()
    engine.model = load_lm(config).model
    plan = prepared.strategy.base_plan(prepared.splits)
    train, candidates = prepared.splits.train, ["bad", "good", "fine", "dull", "cold"]
    words, _ = search_plan_words(engine, plan, train, LabelWordSearch(candidates=candidates))
    scores = engine.word_scores(plan, train, candidates)  # (N, W)
    assert scores.shape == (len(train), len(candidates))
    expected = search_label_words(lambda ex, ws: scores[:, [candidates.index(w) for w in ws]], train, candidates,
                                  labels=["negative", "positive"])
    assert words == expected


# --------------------------------------------------------------------------- real model


@pytest.mark.e2e
def test_smollm2_zero_shot_on_demo_data(tmp_path):
    from tunelab.demo import demo_split_path

    raw = {
        "model": {"name": "smollm2-135m"},
        "data": {"test": str(demo_split_path("test")), "max_test": 32},
        "strategy": {"name": "zero_shot"},
        "prompt": {"template": TEMPLATE, "verbalizer": {"negative": " negative", "positive": " positive"},
                   "use_chat_template": False},
        "metrics": ["accuracy"],
    }
    path = tmp_path / "e2e.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    result = run(load_experiment(path), tmp_path / "run")
    assert result["test"]["accuracy"] >= 0.75  # hand-written, clearly polar reviews
