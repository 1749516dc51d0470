"""A head per task as disjoint rows of one output layer: masking, gradients, encoding, prediction."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_bert_config
from tunelab.training.task_heads import TaskLabels, TaskMaskedModel, encode_task_examples, predict_task

LABELS = TaskLabels(["sst2", "subj", "agnews"], [["negative", "positive"], ["objective", "subjective"],
                                                  ["world", "sports", "business", "tech"]])


@pytest.fixture
def masked_bert():
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return TaskMaskedModel(BertForSequenceClassification(tiny_bert_config(num_labels=LABELS.total)), LABELS)


def test_union_label_space_gives_each_task_its_own_rows():
    assert LABELS.total == 8 and LABELS.offsets == [0, 2, 4]
    assert LABELS.names[2:4] == ["subj:objective", "subj:subjective"]
    assert LABELS.global_id(2, "business") == 6 and list(LABELS.rows(1)) == [2, 3]
    assert LABELS.masks().sum(1).tolist() == [2, 2, 4] and not (LABELS.masks().sum(0) != 1).any()


def test_features_carry_union_label_ids_and_task_ids(bert_tokenizer):
    features = encode_task_examples(bert_tokenizer, [{"text": "a match", "label": "sports"}], 2, LABELS, 16)
    assert features[0]["labels"] == 5 and features[0]["task_ids"] == 2 and features[0]["input_ids"]


def test_a_task_loss_reaches_only_its_own_head_rows(masked_bert, bert_tokenizer):
    from transformers import DataCollatorWithPadding

    examples = [{"text": "objective facts", "label": "objective"}, {"text": "i feel", "label": "subjective"}]
    batch = DataCollatorWithPadding(bert_tokenizer)(encode_task_examples(bert_tokenizer, examples, 1, LABELS, 16))
    masked_bert.train()
    output = masked_bert(**batch)
    output.loss.backward()
    grad = masked_bert.model.classifier.weight.grad.abs().sum(1)  # (L_total,)
    assert (grad[2:4] > 0).all() and grad[[0, 1, 4, 5, 6, 7]].eq(0).all()
    assert output.logits[:, :2].max() == torch.finfo(output.logits.dtype).min  # other tasks' rows masked


def test_mixed_batches_mask_each_example_by_its_own_task(masked_bert):
    ids = torch.tensor([[101, 2000, 102], [101, 2001, 102]])
    logits = masked_bert(input_ids=ids, attention_mask=torch.ones_like(ids), task_ids=torch.tensor([0, 2])).logits
    kept = logits > torch.finfo(logits.dtype).min
    assert kept[0].nonzero().flatten().tolist() == [0, 1] and kept[1].nonzero().flatten().tolist() == [4, 5, 6, 7]


def test_prediction_reads_only_the_task_labels(masked_bert, bert_tokenizer):
    rows = predict_task(masked_bert, bert_tokenizer, [{"text": "stocks fell"}, {"text": "a goal"}], 2, 16, 8)
    for row in rows:
        assert row["prediction"] in LABELS.labels[2] and set(row["scores"]) == set(LABELS.labels[2])
        assert sum(row["scores"].values()) == pytest.approx(1.0)
