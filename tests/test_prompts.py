"""Prompts package: sandboxed templates, prompt layout, chat templates, verbalizers, calibration,
label-word search, demonstration selection and fitting, chain-of-thought helpers. No model passes
except one tiny random BERT for `embed_texts`."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from tunelab.errors import ConfigError, DataError
from tunelab.prompts import (
    DEFAULT_COT_CUE,
    DemonstrationsDroppedWarning,
    PromptSettings,
    Verbalizer,
    apply_chat_template,
    apply_chat_template_parts,
    build_prompt,
    build_prompt_parts,
    calibrate,
    cot_demonstrations,
    embed_texts,
    extract_answer,
    fit_demonstrations,
    majority_vote,
    nearest_demonstrations,
    render,
    search_label_words,
    select_demonstrations,
    validate_fields,
    zero_shot_cot_step1,
    zero_shot_cot_step2,
)

TEMPLATE = "Review: {{ text }}\nSentiment:"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


# --- templates -------------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["{{ ''.__class__.__mro__ }}", "{{ text.__class__ }}", "{{ cycler.__init__.__globals__.os }}"])
def test_sandbox_blocks_attribute_escapes(source):
    with pytest.raises(ConfigError, match="unsafe"):
        render(source, {"text": "hi"})


def test_sandbox_is_immutable():
    with pytest.raises(ConfigError):
        render("{{ choices.append('x') }}", {"choices": ["a"]})


def test_missing_field_names_it_and_the_available_ones():
    with pytest.raises(ConfigError) as err:
        validate_fields("{{ sentence }} {{ text }}", ["text", "label"], key="prompt.template")
    message = str(err.value)
    assert "'sentence'" in message and "prompt.template" in message and "['label', 'text']" in message
    # Jinja globals and loop variables are not fields.
    assert validate_fields("{% for c in choices %}{{ loop.index }}{{ c }}{% endfor %}{{ range(2)|list }}", ["choices"]) == {"choices"}
    with pytest.raises(ConfigError, match="available fields"):
        render("{{ missing }}", {"text": "x"})


def test_syntax_error_names_the_line():
    with pytest.raises(ConfigError, match="line 2"):
        validate_fields("ok\n{{ text ", ["text"])
    with pytest.raises(ValidationError, match="line 1"):
        PromptSettings(template="{% if text %}")


def test_settings_forbid_unknown_keys_and_check_fields():
    with pytest.raises(ValidationError, match="instructions"):
        PromptSettings(instructions="typo")
    settings = PromptSettings(template="{{ text }} / {{ text_pair }}")
    settings.check_fields(["text", "text_pair", "label"])
    with pytest.raises(ConfigError, match="text_pair"):
        settings.check_fields(["text", "label"])


def test_default_template_uses_text_fields():
    settings = PromptSettings()
    assert build_prompt(settings, {"text": "a"}) == "a"
    assert build_prompt(settings, {"text": "a", "text_pair": "b"}) == "a\nb"
    with pytest.raises(ConfigError, match="no 'text' field"):
        build_prompt(settings, {"sentence": "a"})


def test_parts_come_in_the_documented_order():
    settings = PromptSettings(
        template=TEMPLATE, instruction="INSTRUCTION", context="CONTEXT", persona="PERSONA",
        output_format="FORMAT", tone="TONE", constraints=["C1", "C2"], dynamic_context=["TURN1", "TURN2"],
        chain_of_thought=True, self_check="SELFCHECK",
    )
    demos = [({"text": "bad film"}, " negative"), ({"text": "great film"}, "positive")]
    prompt = build_prompt(settings, {"text": "fine film"}, demos)
    assert prompt == (
        "PERSONA\nINSTRUCTION\nCONTEXT\n- C1\n- C2\nFORMAT\nTONE\nTURN1\nTURN2\n\n"
        "Review: bad film\nSentiment: negative\n\n"
        "Review: great film\nSentiment: positive\n\n"
        f"Review: fine film\nSentiment: {DEFAULT_COT_CUE} SELFCHECK"
    )


def test_empty_parts_are_skipped_and_split_form_matches():
    settings = PromptSettings(template=TEMPLATE, instruction="Classify.", context="", demonstration_separator="\n###\n")
    demos = [({"text": "bad"}, "negative")]
    prefix, query = build_prompt_parts(settings, {"text": "good"}, demos)
    assert prefix == "Classify.\n###\nReview: bad\nSentiment: negative\n###\n"
    assert query == "Review: good\nSentiment:"
    assert prefix + query == build_prompt(settings, {"text": "good"}, demos)
    # Per-example demonstrations move into the query; the prefix keeps only the parts.
    prefix, query = build_prompt_parts(settings, {"text": "good"}, demos, demonstrations_fixed=False)
    assert prefix == "Classify.\n###\n" and query.startswith("Review: bad")
    assert build_prompt_parts(PromptSettings(template=TEMPLATE), {"text": "x"}) == ("", "Review: x\nSentiment:")


def test_custom_demonstration_template_sees_fields():
    settings = PromptSettings(template="{{ text }}", demonstration_template="{{ prompt }} => {{ answer }} ({{ label }})")
    assert build_prompt(settings, {"text": "q"}, [({"text": "d", "label": 1}, "yes")]) == "d => yes (1)\n\nq"


def test_chat_template_applied_only_when_present(bert_tokenizer):
    assert apply_chat_template(bert_tokenizer, "hello", "auto") == "hello"  # base model: plain text
    with pytest.raises(ConfigError, match="no chat template"):
        apply_chat_template(bert_tokenizer, "hello", True)
    chat = copy.deepcopy(bert_tokenizer)
    chat.chat_template = CHAT_TEMPLATE
    assert apply_chat_template(chat, "hello", "auto") == "<|user|>hello\n<|assistant|>"
    assert apply_chat_template(chat, "hello", False) == "hello"
    prefix, query = apply_chat_template_parts(chat, "Classify.\n\n", "Review: x", "auto")
    assert prefix == "<|user|>Classify.\n\n" and query == "Review: x\n<|assistant|>"


# --- verbalizers -----------------------------------------------------------------------------

def test_verbalizer_validation():
    with pytest.raises(ConfigError, match=r"'neutral'.*valid labels: \['negative', 'positive'\]"):
        Verbalizer({"negative": "bad", "positive": "good", "neutral": "meh"}, labels=["negative", "positive"])
    with pytest.raises(ConfigError, match="no words for label 'positive'"):
        Verbalizer({"negative": "bad"}, labels=["negative", "positive"])
    with pytest.raises(ConfigError, match="non-empty"):
        Verbalizer({"negative": "bad", "positive": ["good", "  "]}, labels=["negative", "positive"])
    with pytest.raises(ConfigError, match="both"):
        Verbalizer({"negative": "fine", "positive": ["fine"]})


def test_verbalizer_words_candidates_and_aggregation():
    v = Verbalizer({"positive": ["great", "very good"], 0: "bad"}, labels=["0", "positive"])  # YAML int key
    assert v.labels == ("0", "positive") and v.label_words("positive") == ["great", "very good"]
    words, index = v.candidates()
    assert words == ["bad", "great", "very good"] and index == [0, 1, 1]
    scores = np.log(np.array([[0.2, 0.3, 0.1], [0.5, 0.05, 0.05]]))  # (N=2, W=3)
    np.testing.assert_allclose(v.aggregate(scores, "max"), np.log([[0.2, 0.3], [0.5, 0.05]]))
    np.testing.assert_allclose(v.aggregate(scores, "logsumexp"), np.log([[0.2, 0.4], [0.5, 0.1]]))
    np.testing.assert_allclose(v.aggregate(scores, "mean"), [[np.log(0.2), np.log(0.03) / 2], [np.log(0.5), np.log(0.05)]])
    t = torch.tensor(scores, requires_grad=True)
    out = v.aggregate(t, "logsumexp")
    assert out.shape == (2, 2) and out.requires_grad  # differentiable for prompt-based fine-tuning
    assert v.decode(out) == ["positive", "0"]


def test_calibration_hand_example():
    # p = [0.7, 0.3], p_cf = [0.8, 0.2] -> [0.7/0.8, 0.3/0.2] = [0.875, 1.5] -> / 2.375
    p = np.array([[0.7, 0.3], [0.9, 0.1]])
    cf = np.array([0.8, 0.2])
    expected = np.array([[0.875, 1.5], [1.125, 0.5]])
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(calibrate(p, cf), expected)
    assert calibrate(p, cf).argmax(1).tolist() == [1, 0]  # the first example flips to the minority label
    np.testing.assert_allclose(calibrate(torch.tensor(p), torch.tensor(cf)).numpy(), expected)
    np.testing.assert_allclose(calibrate(p, [1.0, 1.0]), p)  # uniform content-free output changes nothing


def test_label_word_search_finds_planted_words():
    words = ["the", "great", "terrible", "good", "awful", "movie"]
    examples = [{"label": "pos"}] * 4 + [{"label": "neg"}] * 4
    rng = np.random.default_rng(0)

    def score_fn(exs, ws):
        scores = rng.normal(-8.0, 0.1, size=(len(exs), len(ws)))  # (N, W)
        scores[:, ws.index("the")] = -1.0  # frequent everywhere: high likelihood, no contrast
        for i, ex in enumerate(exs):
            scores[i, ws.index("great" if ex["label"] == "pos" else "terrible")] = -2.0
            scores[i, ws.index("good" if ex["label"] == "pos" else "awful")] = -3.0
        return scores

    assert search_label_words(score_fn, examples, words, top_n=2) == {"pos": ["great", "good"], "neg": ["terrible", "awful"]}
    with pytest.raises(DataError, match="no training example has label 'other'"):
        search_label_words(score_fn, examples, words, labels=["pos", "neg", "other"])


# --- demonstrations --------------------------------------------------------------------------

POOL = [{"text": f"ex{i}", "label": "a" if i < 6 else ("b" if i < 9 else "c")} for i in range(12)]


def test_balanced_selection_counts_and_determinism():
    chosen = select_demonstrations(POOL, 6, "balanced", seed=3)
    assert sorted(ex["label"] for ex in chosen) == ["a", "a", "b", "b", "c", "c"]
    assert chosen == select_demonstrations(POOL, 6, "balanced", seed=3)
    assert chosen != select_demonstrations(POOL, 6, "balanced", seed=4)
    labels = [ex["label"] for ex in select_demonstrations(POOL, 6, "balanced", seed=3)]
    assert labels[:3] == labels[3:]  # round-robin


def test_random_selection_is_seeded_and_excludes_the_query():
    first = select_demonstrations(POOL, 5, "random", seed=1)
    assert first == select_demonstrations(POOL, 5, "random", seed=1) and len(first) == 5
    assert len(select_demonstrations(POOL, 50, "random")) == len(POOL)
    assert POOL[0] not in select_demonstrations(POOL, 11, "random", query=POOL[0])
    with pytest.raises(ConfigError, match="unknown demonstration selection"):
        select_demonstrations(POOL, 2, "closest")


def test_nearest_selection_puts_the_most_similar_last():
    pool = [{"text": t} for t in ["cat", "dog", "car", "kitten", "truck"]]
    vectors = {"cat": [1, 0.1, 0], "dog": [0.7, 0.7, 0], "car": [0, 0, 1], "kitten": [1, 0, 0],
               "truck": [0, 0.2, 1], "a kitty": [1, 0, 0.05]}

    def embed_fn(texts):
        return np.array([vectors[t] for t in texts], dtype=float) * 3.0  # unnormalised: cosine must normalise

    chosen = select_demonstrations(pool, 3, "nearest", query={"text": "a kitty"}, embed_fn=embed_fn)
    assert [ex["text"] for ex in chosen] == ["dog", "cat", "kitten"]
    many = nearest_demonstrations(pool, [{"text": "a kitty"}, {"text": "truck"}], 1, embed_fn)
    assert [[ex["text"] for ex in row] for row in many] == [["kitten"], ["car"]]  # the query itself is skipped
    with pytest.raises(ConfigError, match="embedding function"):
        select_demonstrations(pool, 2, "nearest", query={"text": "x"})


def test_fit_demonstrations_drops_from_the_front_and_warns():
    demos = ["d1 " * 10, "d2 " * 10, "d3 " * 10]

    def render_fn(kept):
        return " ".join(kept) + " query"

    def count(text):
        return len(text.split())

    with pytest.warns(DemonstrationsDroppedWarning, match="dropped 2 of 3"):
        assert fit_demonstrations(demos, render_fn, count, budget_tokens=15) == [demos[2]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fit_demonstrations(demos, render_fn, count, budget_tokens=100) == demos
    with pytest.warns(DemonstrationsDroppedWarning) as record:
        assert fit_demonstrations(demos, render_fn, count, budget_tokens=0) == []
    assert ["dropped 3 of 3" in str(w.message) or "even without" in str(w.message) for w in record] == [True, True]


def test_embed_texts_mean_pools_and_ignores_padding(bert_tokenizer):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=bert_tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=1, num_attention_heads=4, max_position_embeddings=64))
    texts = ["short", "a much longer sentence that forces padding of the short one", "mid size text"]
    together = embed_texts(model, bert_tokenizer, texts, batch_size=3)
    alone = embed_texts(model, bert_tokenizer, texts[:1])
    assert together.shape == (3, 32) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together[0], alone[0], atol=1e-5)


# --- chain of thought ------------------------------------------------------------------------

@pytest.mark.parametrize("text, kwargs, expected", [
    ("It is great. So the answer is negative, not positive.", {"labels": ["positive", "negative"]}, "negative"),
    ("At first negative... overall POSITIVE", {"labels": ["positive", "negative"]}, "positive"),
    ("no label here", {"labels": ["positive", "negative"]}, None),
    ("the answer: very good", {"labels": {"pos": ["good", "very good"], "neg": "bad"}}, "pos"),
    ("positively unrelated", {"labels": ["positive"]}, None),  # whole words only
    ("He has 3 apples, buys 1,234 more: 1,237. The answer is 1,237.", {"numeric": True}, "1237"),
    ("Temperature drops from 2 to -4.5 degrees", {"numeric": True}, "-4.5"),
    ("Pages 3-5", {"numeric": True}, "5"),
    ("The answer (arabic numerals) is 42.00", {"numeric": True}, "42"),
    ("nothing numeric", {"numeric": True}, None),
    ("#### 12\n#### 17", {"pattern": r"####\s*(\d+)"}, "17"),
    ("Answer: (B) then Answer: (C)", {"pattern": r"\(([A-D])\)"}, "C"),
    ("[[yes]] I am sure", {"pattern": r"\[\[(.*?)\]\]", "labels": {"pos": "yes", "neg": "no"}}, "pos"),
    (None, {"numeric": True}, None),
])
def test_extract_answer(text, kwargs, expected):
    assert extract_answer(text, **kwargs) == expected


def test_extract_answer_bad_pattern():
    with pytest.raises(ConfigError, match="regular expression"):
        extract_answer("x", pattern="(")


def test_majority_vote():
    assert majority_vote(["a", "b", "b", None, "a"]) == "a"  # tie: first occurrence
    assert majority_vote([None, "7", "8", "8"]) == "8"
    assert majority_vote([None, None]) is None and majority_vote([]) is None


def test_few_shot_cot_demonstrations():
    settings = PromptSettings(template="Q: {{ text }}\nA:")
    demos = cot_demonstrations([{"text": "2+2?", "rationale": "Two plus two is four.", "label": "4"}])
    prompt = build_prompt(settings, {"text": "3+3?"}, demos)
    assert prompt == "Q: 2+2?\nA: Two plus two is four. So the answer is 4.\n\nQ: 3+3?\nA:"
    with pytest.raises(DataError, match="rationale"):
        cot_demonstrations([{"text": "x", "label": "1"}])


def test_zero_shot_cot_two_steps():
    step1 = zero_shot_cot_step1("Q: 3+3?\nA:")
    assert step1 == "Q: 3+3?\nA: Let's think step by step."
    step2 = zero_shot_cot_step2(step1, " Three plus three is six.\n")
    assert step2 == "Q: 3+3?\nA: Let's think step by step. Three plus three is six.\nTherefore, the answer is"
