"""Regularisation that composes with every training strategy: label smoothing, dropout overrides, R-Drop."""

import copy
import csv

import pytest
import torch
import torch.nn.functional as F
import yaml

from conftest import experiment_yaml, tiny_bert_config, tiny_llama_config
from tunelab.cli import main
from tunelab.config import TrainConfig
from tunelab.errors import ConfigError
from tunelab.training.regularization import apply_dropout, regularized_loss, trainer_class


def test_loss_formulas_by_hand():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 2, 1, 1, 0, 2])
    assert torch.equal(regularized_loss(logits, labels), F.cross_entropy(logits, labels))
    e = 0.1
    logp = logits.log_softmax(-1)
    hand = ((1 - e) * -logp[torch.arange(6), labels] + e * -logp.mean(-1)).mean()
    assert torch.allclose(regularized_loss(logits, labels, label_smoothing=e), hand, atol=1e-6)
    two = torch.cat([logits, logits + torch.randn(6, 3)])  # rows: copy 1, then copy 2
    p, q = two[:6].softmax(-1), two[6:].softmax(-1)
    kl = ((p * (p / q).log()).sum(-1) + (q * (q / p).log()).sum(-1)).mean()
    ce = (F.cross_entropy(two[:6], labels) + F.cross_entropy(two[6:], labels)) / 2
    assert torch.allclose(regularized_loss(two, labels, rdrop_alpha=2.0), ce + 2.0 * kl, atol=1e-6)


def test_label_smoothing_spreads_over_the_slots_a_row_has():
    """A multiple-choice row with fewer choices than the batch's widest scores the missing slot -1e9
    (pet_choices): its smoothed loss is torch's over its own slots, as if the slot were not there."""
    from tunelab.methods.choice_model import PAD_SCORE

    full, short = torch.tensor([0.3, -1.2, 2.0]), torch.tensor([1.5, -0.4])
    logits = torch.stack([full, torch.cat([short, torch.tensor([PAD_SCORE])])])
    labels = torch.tensor([2, 0])
    expected = (F.cross_entropy(full[None], labels[:1], label_smoothing=0.2)
                + F.cross_entropy(short[None], labels[1:], label_smoothing=0.2)) / 2
    assert regularized_loss(logits, labels, label_smoothing=0.2).item() == pytest.approx(expected.item(), rel=1e-6)
    plain = torch.stack([full, torch.tensor([1.5, -0.4, 0.1])])  # no slot missing: torch's own, unchanged
    assert regularized_loss(plain, labels, label_smoothing=0.2).item() == pytest.approx(
        F.cross_entropy(plain, labels, label_smoothing=0.2).item(), rel=1e-6)


def test_defaults_keep_the_plain_trainer():
    from transformers import Trainer

    assert trainer_class(TrainConfig()) is Trainer
    assert trainer_class(TrainConfig(label_smoothing=0.1)) is not Trainer


def _batch(tokenizer):
    enc = tokenizer(["good fine great", "bad awful poor"], padding=True, return_tensors="pt")
    return {**enc, "labels": torch.tensor([1, 0])}


def test_rdrop_loss_through_the_trainer_equals_the_hand_formula(tmp_path, bert_tokenizer):
    from transformers import BertForSequenceClassification

    from tunelab.train import training_arguments

    cfg = TrainConfig(rdrop_alpha=0.5, label_smoothing=0.05, progress_bar=False, log_to=[])
    model = BertForSequenceClassification(tiny_bert_config(num_labels=2, hidden_dropout_prob=0.3))
    trainer = trainer_class(cfg)(model=model, args=training_arguments(cfg, tmp_path, has_dev=False))
    batch = _batch(bert_tokenizer)
    model.train()
    torch.manual_seed(7)
    loss = trainer.compute_loss(model, dict(batch))
    torch.manual_seed(7)
    inputs = {k: torch.cat([v, v]) for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits
    a, b = logits[:2], logits[2:]
    ce = (F.cross_entropy(a, batch["labels"], label_smoothing=0.05) + F.cross_entropy(b, batch["labels"], label_smoothing=0.05)) / 2
    p, q = a.softmax(-1), b.softmax(-1)
    kl = ((p * (p / q).log()).sum(-1) + (q * (q / p).log()).sum(-1)).mean()
    assert not torch.equal(a, b)  # dropout differs between the two copies
    assert torch.allclose(loss, ce + 0.5 * kl, atol=1e-5)
    plain = trainer_class(TrainConfig())(model=model, args=training_arguments(cfg, tmp_path, has_dev=False))
    torch.manual_seed(7)
    expected = model(**batch).loss
    torch.manual_seed(7)
    assert torch.equal(plain.compute_loss(model, dict(batch)), expected)  # alpha 0: today's loss


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_logged_training_loss_is_the_smoothed_loss(tmp_path, bert_tokenizer, smoothing):
    from transformers import BertForSequenceClassification, set_seed

    from tunelab.readouts.classification import encode_classification
    from tunelab.train import train_model

    set_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(num_labels=2))
    before = copy.deepcopy(model).eval()
    examples = [{"text": "good fine great", "label": "b"}, {"text": "bad awful poor", "label": "a"}]
    features = encode_classification(bert_tokenizer, examples, ["a", "b"], max_length=16)
    cfg = TrainConfig(epochs=1, batch_size=2, logging_steps=1, progress_bar=False, log_to=["csv"],
                      label_smoothing=smoothing, dropout={"hidden": 0.0, "attention": 0.0, "classifier": 0.0})
    train_model(model, bert_tokenizer, features, [], cfg, tmp_path, score_dev=None, metric_for_best="accuracy")
    rows = list(csv.DictReader(open(tmp_path / "logs.csv")))
    logged = float(next(r["loss"] for r in rows if r.get("loss")))
    with torch.no_grad():
        logits = before(**{k: v for k, v in _batch(bert_tokenizer).items() if k != "labels"}).logits
    hand = F.cross_entropy(logits, torch.tensor([1, 0]), label_smoothing=smoothing).item()
    assert logged == pytest.approx(hand, abs=1e-3)


def test_dropout_overrides_change_the_built_modules():
    from transformers import BertForSequenceClassification, LlamaForSequenceClassification

    bert = BertForSequenceClassification(tiny_bert_config(num_labels=2))
    changed = apply_dropout(bert, {"hidden": 0.25, "attention": 0.15, "classifier": 0.4})
    assert all(changed.values())
    assert bert.dropout.p == 0.4 and bert.config.classifier_dropout == 0.4
    layer = bert.bert.encoder.layer[0]
    assert layer.attention.self.dropout.p == 0.15 and bert.config.attention_probs_dropout_prob == 0.15
    assert layer.attention.output.dropout.p == 0.25 and layer.output.dropout.p == 0.25
    assert bert.bert.embeddings.dropout.p == 0.25 and bert.config.hidden_dropout_prob == 0.25

    llama = LlamaForSequenceClassification(tiny_llama_config(num_labels=2))
    apply_dropout(llama, {"attention": 0.3})
    assert llama.config.attention_dropout == 0.3
    assert all(layer.self_attn.attention_dropout == 0.3 for layer in llama.model.layers)
    with pytest.raises(ConfigError, match="train.dropout.hidden"):
        apply_dropout(llama, {"hidden": 0.1})


def test_a_dropout_the_architecture_lacks_exits_2_before_weights_load(tmp_path, tiny_llama_dir, tiny_sentiment, capsys, monkeypatch):
    import tunelab.methods.classifier as classifier

    monkeypatch.setattr(classifier, "load_model", lambda *a, **k: pytest.fail("weights loaded"))
    exp = experiment_yaml(tmp_path / "e.yaml", tiny_llama_dir, tiny_sentiment, {"name": "head"},
                          train={"dropout": {"hidden": 0.1}})
    assert main(["run", str(exp), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "train.dropout.hidden" in err and "line" in err and "LlamaConfig" in err


@pytest.mark.parametrize("train, key", [({"label_smoothing": 1.0}, "label_smoothing"), ({"rdrop_alpha": -1}, "rdrop_alpha"),
                                        ({"dropout": {"hiden": 0.1}}, "hiden"), ({"dropout": {"hidden": 1.5}}, "hidden")])
def test_bad_values_exit_2_naming_the_key(tmp_path, tiny_bert_dir, tiny_sentiment, capsys, train, key):
    exp = experiment_yaml(tmp_path / "e.yaml", tiny_bert_dir, tiny_sentiment, {"name": "head"}, train=train)
    assert main(["run", str(exp), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert key in err and "line" in err


def test_head_trains_with_all_three(tmp_path, tiny_bert_dir, tiny_sentiment):
    reg = {"label_smoothing": 0.1, "rdrop_alpha": 1.0, "dropout": {"hidden": 0.2, "attention": 0.1}, "epochs": 1}
    exp = experiment_yaml(tmp_path / "h.yaml", tiny_bert_dir, tiny_sentiment, {"name": "head"}, train=reg)
    assert main(["run", str(exp), "--out", str(tmp_path / "h")]) == 0


def test_pet_trains_with_label_smoothing_and_rdrop(tmp_path, tiny_llama_dir, tiny_sentiment):
    reg = {"label_smoothing": 0.1, "rdrop_alpha": 1.0, "dropout": {"attention": 0.1}, "epochs": 1}
    exp = experiment_yaml(tmp_path / "p.yaml", tiny_llama_dir, tiny_sentiment, {"name": "pet", "train": "lora"}, train=reg,
                          prompt={"template": "Review: {{ text }}\nSentiment:",
                                  "verbalizer": {"negative": "bad", "positive": "good"}})
    assert main(["run", str(exp), "--out", str(tmp_path / "p")]) == 0


def test_a_sweep_compares_label_smoothing_against_none(tmp_path, tiny_bert_dir, tiny_sentiment, capsys):
    from tunelab.config import load_experiment
    from tunelab.sweep.runner import plan_sweep

    path = experiment_yaml(tmp_path / "s.yaml", tiny_bert_dir, tiny_sentiment, {"name": "head"})
    raw = yaml.safe_load(path.read_text())
    raw["output_dir"] = str(tmp_path / "runs")
    raw["sweep"] = {"isolation": "none", "strategies": ["lora", {"name": "lora", "id": "lora-ls",
                                                                  "train": {"label_smoothing": 0.1}}]}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["compare", str(path), "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert "lora-kall-seed42" in listing and "lora-ls-kall-seed42" in listing
    _, cells = plan_sweep(load_experiment(path))
    smoothing = {c.id: c.config["train"]["label_smoothing"] for c in cells}
    assert smoothing == {"lora-kall-seed42": 0.0, "lora-ls-kall-seed42": 0.1}


def test_cells_finished_before_these_keys_existed_are_unchanged():
    from tunelab.sweep.expand import config_changes

    old = {"train": {"seed": 1, "weight_decay": 0.0}}
    assert config_changes(old, {"train": {"seed": 1, "weight_decay": 0.0, "label_smoothing": 0.0,
                                          "rdrop_alpha": 0.0, "dropout": None}}) == []
    assert config_changes(old, {"train": {"seed": 1, "weight_decay": 0.0, "label_smoothing": 0.1}}) == [
        "train.label_smoothing: None → 0.1"]


def test_cells_finished_before_the_token_qa_and_empty_text_keys_existed_are_unchanged():
    from tunelab.config import validate_experiment
    from tunelab.sweep.expand import config_changes

    today = validate_experiment({}).model_dump(mode="json")
    old = {section: dict(today[section]) for section in ("task", "data")}
    for section, key in (("task", "tokens_field"), ("task", "tags_field"), ("task", "question_field"),
                         ("task", "context_field"), ("task", "answers_field"), ("data", "skip_empty_text")):
        del old[section][key]
    expected = {section: today[section] for section in ("task", "data")}
    assert config_changes(old, expected) == []
    assert config_changes(old, {**expected, "data": {**expected["data"], "skip_empty_text": True}}) == [
        "data.skip_empty_text: None → True"]


def _sft_experiment(tmp_path, model_dir, train):
    from conftest import write_jsonl

    rows = [{"text": f"item {i} is here", "summary": f"item {i}"} for i in range(4)]
    data = {split: str(write_jsonl(tmp_path / f"{split}.jsonl", rows)) for split in ("train", "dev", "test")}
    return experiment_yaml(tmp_path / "sft.yaml", model_dir, data, {"name": "sft", "generation": {"max_new_tokens": 4}},
                           task={"type": "generation", "target_field": "summary", "label_names": None},
                           prompt={"template": "Text: {{ text }}\nShort:"}, metrics=["rouge1"], train=train)


def test_sft_takes_dropout_and_refuses_label_losses(tmp_path, tiny_llama_dir, capsys):
    exp = _sft_experiment(tmp_path, tiny_llama_dir, {"epochs": 1, "dropout": {"attention": 0.1}})
    assert main(["run", str(exp), "--out", str(tmp_path / "ok")]) == 0
    for key in ("label_smoothing", "rdrop_alpha"):
        exp = _sft_experiment(tmp_path, tiny_llama_dir, {"epochs": 1, key: 0.1})
        assert main(["run", str(exp), "--out", str(tmp_path / key)]) == 2
        err = capsys.readouterr().err
        assert f"train.{key}" in err and "line" in err and not (tmp_path / key).exists()


# The experiment's keys when resume compatibility was last reviewed. A key added since must go into
# tunelab.sweep.expand.ADDED_KEYS with the default that reproduces what older cells ran, or every
# finished cell of an existing sweep counts as changed and `tunelab compare` refuses to resume it.
KEYS_BEFORE_ADDED_ONES = {
    "continual", "data.dev", "data.dev_k_shot", "data.k_shot", "data.max_test", "data.test", "data.train",
    "metrics", "model.device", "model.dtype", "model.max_length", "model.name", "model.pooling",
    "model.trust_remote_code", "multitask", "name", "output_dir", "prompt", "strategy.name", "sweep",
    "task.choices_field", "task.label_field", "task.label_names", "task.target_field", "task.text_field",
    "task.text_pair_field", "task.type", "tasks", "train.batch_size", "train.early_stopping_patience",
    "train.epochs", "train.eval_batch_size", "train.eval_steps", "train.eval_strategy",
    "train.gradient_accumulation_steps", "train.group_by_length", "train.learning_rate", "train.log_to",
    "train.logging_steps", "train.lr_scheduler", "train.max_grad_norm", "train.metric_for_best",
    "train.mixed_precision", "train.progress_bar", "train.seed", "train.warmup_ratio", "train.weight_decay",
}


def config_key_paths(node: dict, prefix: tuple = ()):
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from config_key_paths(value, prefix + (key,))
        else:
            yield ".".join(prefix + (key,))


def test_every_config_key_is_known_to_resume():
    from tunelab.config import validate_experiment
    from tunelab.sweep.expand import ADDED_KEYS

    added = {".".join(path) for path in ADDED_KEYS}
    unknown = set(config_key_paths(validate_experiment({}).model_dump(mode="json"))) - KEYS_BEFORE_ADDED_ONES - added
    assert not unknown, (f"new config keys {sorted(unknown)}: add each to ADDED_KEYS (tunelab/sweep/expand.py) with "
                         "the default that reproduces what cells ran before it existed")
