"""Dev evaluation in length-sorted batches, predictions back in the dev split's order (tunelab.training.dev_batches)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_bert_config
from tunelab.training.dev_batches import in_split_order, length_batches, token_length


def test_batches_run_longest_first_within_the_row_cap_and_the_token_budget():
    lengths = [5, 40, 12, 33, 7, 40, 20, 9, 15, 11]
    batches = length_batches(lengths, max_rows=4)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every example once
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths, reverse=True)
    budget = 4 * int(np.median(lengths))  # 4 rows of the median length (13): 52 padded tokens
    for batch in batches:
        assert len(batch) <= 4
        assert len(batch) == 1 or len(batch) * lengths[batch[0]] <= budget
    assert [len(b) for b in batches] == [1, 1, 1, 2, 4, 1]  # long rows alone, short ones together
    assert batches[0] == [1] and batches[1] == [5]  # ties keep the split's order


def test_a_batch_of_equal_lengths_fills_up_to_the_row_cap():
    assert length_batches([8] * 10, max_rows=4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert length_batches([], max_rows=4) == []


def test_predictions_in_batch_order_are_put_back_in_the_splits_order():
    order = [3, 0, 2, 1]
    logits = np.array([[3.0], [0.0], [2.0], [1.0]])  # row r belongs to example order[r]
    labels = np.array([30, 0, 20, 10])
    assert in_split_order(logits, order).tolist() == [[0.0], [1.0], [2.0], [3.0]]
    restored = in_split_order((logits, labels), order)
    assert isinstance(restored, tuple) and restored[1].tolist() == [0, 10, 20, 30]
    assert in_split_order(None, order) is None


def test_a_multiple_choice_feature_is_as_wide_as_its_longest_choice():
    assert token_length([[1, 2], [1, 2, 3, 4], [1]]) == 4
    assert token_length([1, 2, 3]) == 3


WORD_COUNTS = [3, 17, 1, 9, 12, 2, 20, 5, 7, 14]
"""Dev texts of these many words, labelled by parity: lengths that length sorting reorders, into uneven batches."""


def tiny_model_and_data(bert_tokenizer):
    """(tiny BERT classifier, 2 train features, dev features of WORD_COUNTS words, label b for odd counts)."""
    from transformers import BertForSequenceClassification, set_seed

    from tunelab.readouts.classification import encode_classification

    set_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(num_labels=2))
    train = encode_classification(bert_tokenizer, [{"text": "good", "label": "b"}, {"text": "bad", "label": "a"}],
                                  ["a", "b"], max_length=64)
    dev = encode_classification(bert_tokenizer, [{"text": " ".join(["word"] * n), "label": "ab"[n % 2]}
                                                 for n in WORD_COUNTS], ["a", "b"], max_length=64)
    return model, train, dev


def test_training_evaluates_dev_in_length_batches_and_scores_it_in_the_splits_order(tmp_path, bert_tokenizer):
    """The model sees dev batches as wide as their longest row, longest first; the scorer and the held-out record
    still get row i = dev example i (each dev text's length is its label, so a misaligned row would show)."""
    from tunelab.config import TrainConfig
    from tunelab.held_out_dev import DevReadout
    from tunelab.train import train_model

    model, train, dev = tiny_model_and_data(bert_tokenizer)
    widths, seen = [], []

    def record_width(module, args, kwargs):
        if not module.training:
            widths.append(kwargs["input_ids"].shape)

    def score(logits, label_ids):
        seen.append(list(label_ids))
        return {"accuracy": float((np.asarray(logits).argmax(-1) == label_ids).mean())}

    def probabilities(logits, label_ids):
        return torch.as_tensor(logits).float().softmax(-1).numpy(), label_ids

    model.register_forward_pre_hook(record_width, with_kwargs=True)
    cfg = TrainConfig(epochs=2, batch_size=2, eval_batch_size=4, progress_bar=False, log_to=[])
    stats = train_model(model, bert_tokenizer, train, dev, cfg, tmp_path, score_dev=score, metric_for_best="accuracy",
                        dev_readout=DevReadout(probabilities, score, ["a", "b"]))
    lengths = [len(f["input_ids"]) for f in dev]
    expected = [(len(b), lengths[b[0]]) for b in length_batches(lengths, 4)]
    assert widths[: len(expected)] == [torch.Size(shape) for shape in expected]  # one epoch's dev evaluation
    assert sum(rows * width for rows, width in expected) < len(dev) * max(lengths)  # less padding than in order
    gold = [n % 2 for n in WORD_COUNTS]
    whole = [labels for labels in seen if len(labels) == len(gold)]  # the held-out choice also scores folds
    assert len(whole) >= 2 and all(labels == gold for labels in whole)
    assert stats.held_out_dev is not None


@pytest.mark.parametrize("features", [[{"labels": 0}], []])
def test_features_without_token_ids_keep_the_trainers_batches(features):
    from tunelab.train import length_batches_for

    assert length_batches_for(features, 4) is None


def test_the_dev_loss_is_the_mean_over_examples_whatever_the_batch_sizes(tmp_path, bert_tokenizer):
    """The Trainer repeats each batch's loss eval_batch_size times; with length batches of 1 to 4 rows that
    would weigh a lone long row like four short ones. The dev loss (it breaks ties between epochs) must be
    the plain mean cross-entropy over the dev examples."""
    from transformers import DataCollatorWithPadding

    from tunelab.config import TrainConfig
    from tunelab.train import train_model

    model, train, dev = tiny_model_and_data(bert_tokenizer)
    assert len({len(b) for b in length_batches([len(f["input_ids"]) for f in dev], 4)}) > 1  # uneven batches
    cfg = TrainConfig(epochs=1, batch_size=2, eval_batch_size=4, progress_bar=False, log_to=[])
    accuracy = lambda logits, label_ids: {"accuracy": float((np.asarray(logits).argmax(-1) == label_ids).mean())}  # noqa: E731
    stats = train_model(model, bert_tokenizer, train, dev, cfg, tmp_path, score_dev=accuracy, metric_for_best="accuracy")
    model.eval()
    with torch.no_grad():
        batch = DataCollatorWithPadding(bert_tokenizer)(dev)
        expected = torch.nn.functional.cross_entropy(model(**{k: v for k, v in batch.items() if k != "labels"}).logits,
                                                     batch["labels"]).item()
    assert stats.best_dev["loss"] == pytest.approx(expected, abs=1e-5)
