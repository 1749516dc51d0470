"""Metrics against values computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest

from tunelab.errors import ConfigError, DataError
from tunelab.metrics import available_metrics, compute_metrics, get_metric, normalize_text

# A small binary confusion used by several tests:
#   refs  = P P P N N
#   preds = P P N N P
# positive: TP=2 FP=1 FN=1; negative: TP=1 FP=1 FN=1.
REFS = ["pos", "pos", "pos", "neg", "neg"]
PREDS = ["pos", "pos", "neg", "neg", "pos"]


def test_registry_lists_every_metric():
    assert available_metrics() == sorted(
        ["accuracy", "f1", "per_class_f1", "mcc", "exact_match", "bleu", "rouge1", "rouge2", "rougeL",
         "entity_f1", "entity_precision", "entity_recall", "per_type_f1", "squad_em", "squad_f1"]
    )


@pytest.mark.parametrize("name", ["accuracy", "f1", "per_class_f1", "mcc", "exact_match", "bleu",
                                  "rouge1", "rouge2", "rougeL"])
def test_all_metrics_are_higher_is_better(name):
    assert get_metric(name).higher_is_better is True


def test_kinds():
    assert {n for n in available_metrics() if get_metric(n).kind == "classification"} == {
        "accuracy", "f1", "per_class_f1", "mcc"}


def test_accuracy_three_of_four():
    assert get_metric("accuracy")(["a", "b", "a", "a"], ["a", "b", "b", "a"]) == 0.75


def test_macro_and_per_class_f1_by_hand():
    # F1_pos = 2·2/(2·2+1+1) = 2/3; F1_neg = 2·1/(2·1+1+1) = 1/2; macro = (2/3 + 1/2)/2 = 7/12.
    per_class = get_metric("per_class_f1")(PREDS, REFS)
    assert per_class == pytest.approx({"pos": 2 / 3, "neg": 0.5})
    assert get_metric("f1")(PREDS, REFS) == pytest.approx(7 / 12)


def test_labels_fix_the_class_set():
    # A class that never occurs counts as F1 = 0 in the macro average when it is declared.
    scores = compute_metrics(["f1", "per_class_f1"], PREDS, REFS, labels=["pos", "neg", "neutral"])
    assert scores["f1_neutral"] == 0.0
    assert scores["f1"] == pytest.approx((2 / 3 + 0.5 + 0.0) / 3)


def test_mcc_by_hand():
    # TP=2 TN=1 FP=1 FN=1: (2·1 − 1·1) / sqrt(3·3·2·2) = 1/6.
    assert get_metric("mcc")(PREDS, REFS) == pytest.approx(1 / 6)
    # A constant predictor carries no information: MCC 0, not an error.
    assert get_metric("mcc")(["pos"] * 5, REFS) == 0.0


def test_exact_match_normalises():
    assert normalize_text("  The \t Cat\nsat ") == "the cat sat"
    preds = ["  The  Cat\n", "a dog", "Paris"]
    refs = ["the cat", "a cat", "paris"]
    assert get_metric("exact_match")(preds, refs) == pytest.approx(2 / 3)


def test_bleu_identical_is_100_and_disjoint_is_0():
    sents = ["the quick brown fox jumps over the lazy dog", "a stitch in time saves nine stitches"]
    assert get_metric("bleu")(sents, sents) == pytest.approx(100.0)
    assert get_metric("bleu")(["zebra yak walrus okapi"], ["the cat sat on the mat"]) == pytest.approx(0.0)


def test_bleu_matches_sacrebleu_default_and_handles_short_outputs():
    import sacrebleu

    preds = ["the cat sat on a mat today", "hello there my friend"]
    refs = ["the cat sat on the mat today", "hello there friend"]
    assert get_metric("bleu")(preds, refs) == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    # Outputs shorter than 4 tokens: identical answers still score 100, not 0.
    assert get_metric("bleu")(["Paris", "the big cat"], ["Paris", "the big cat"]) == pytest.approx(100.0)


def test_rouge_known_pair():
    # ref: the cat sat on the mat / pred: the cat lay on the rug
    # unigram overlap {the×2, cat, on} = 4 of 6 each side → F = 2/3;
    # bigram overlap {the cat, on the} = 2 of 5 → F = 2/5; LCS "the cat on the" = 4 → F = 2/3.
    pred, ref = ["the cat lay on the rug"], ["the cat sat on the mat"]
    scores = compute_metrics(["rouge1", "rouge2", "rougeL"], pred, ref)
    assert scores == pytest.approx({"rouge1": 200 / 3, "rouge2": 40.0, "rougeL": 200 / 3})


def test_rouge_uses_stemming():
    assert get_metric("rouge1")(["running dogs"], ["run dog"]) == pytest.approx(100.0)


def test_compute_metrics_flattens_per_class_and_returns_plain_floats():
    scores = compute_metrics(["accuracy", "f1", "per_class_f1", "mcc"], PREDS, REFS)
    assert set(scores) == {"accuracy", "f1", "f1_pos", "f1_neg", "mcc"}
    assert all(type(v) is float for v in scores.values())
    assert scores["accuracy"] == pytest.approx(3 / 5)


def test_generation_metrics_return_plain_floats():
    scores = compute_metrics(["exact_match", "bleu", "rouge1", "rouge2", "rougeL"], ["a b c d"], ["a b c d"])
    assert all(type(v) is float and math.isfinite(v) for v in scores.values())


@pytest.mark.parametrize("typo, expected", [("acuracy", "accuracy"), ("rouge_l", "rougeL"),
                                            ("bleu4", "bleu"), ("macro_f1", "f1"),
                                            ("Matthews", "mcc"), ("exactmatch", "exact_match")])
def test_unknown_metric_names_the_closest(typo, expected):
    with pytest.raises(ConfigError) as err:
        get_metric(typo)
    assert f"Did you mean {expected!r}" in str(err.value)
    assert typo in str(err.value)


def test_unknown_name_fails_before_any_work():
    with pytest.raises(ConfigError):
        compute_metrics(["accuracy", "nope"], [], [])


def test_empty_input_is_a_clear_error():
    with pytest.raises(DataError, match="zero examples"):
        compute_metrics(["accuracy"], [], [])


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 predictions but 3 references"):
        get_metric("accuracy")(["a", "b"], ["a", "b", "c"])
