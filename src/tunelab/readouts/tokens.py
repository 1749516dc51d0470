"""`token_head`: a new token-classification head reads one IOB2 tag per word (`task.type: token_classification`).

The head strategies (head, full, partial, bitfit, adapter, lora and the other PEFT methods,
classifier) use it instead of the sentence head when the task is token classification: the model
loads as `AutoModelForTokenClassification` and PEFT wraps it as `TOKEN_CLS`.

Word pieces: words are tokenised with `is_split_into_words` and the fast tokenizer's `word_ids`
map each sub-token to its word. The label sits on a word's FIRST sub-token; its other sub-tokens
and the special tokens get -100, which the loss and the metrics skip (BERT's CoNLL recipe)::

    words   EU      rejects          German   .
    pieces  [CLS] eu  rej ##ects     german   .  [SEP]
    labels  -100  B-ORG O  -100      B-MISC   O  -100

A word's prediction is the argmax at its first sub-token. Words cut off by `model.max_length` are
predicted `O` (with a warning). Predicted tag sequences are read as entities the way the data is
(`tunelab.data.tokens.repair_iob2`: an I-X that starts an entity counts as B-X) before scoring.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from tunelab.data.loaders import SOURCE_KEY
from tunelab.data.tokens import OUTSIDE, repair_iob2
from tunelab.errors import ConfigError
from tunelab.readouts.registry import register

TAGGING = "token_classification"
IGNORE = -100


@register("token_head", "a new token-classification head reads one IOB2 tag per word (task.type: token_classification)",
          pairing="head", used_by="the head strategies on token_classification tasks (head, full, lora, ...)")
class TokenHead:
    def check(self, experiment, strategy: str) -> None:
        """Any model takes a new head; the fast tokenizer (word_ids) is checked when it loads."""


def head_architecture(experiment) -> str:
    """The model class a head read-out loads: a tag per token, or a label per example."""
    return TAGGING if experiment.task.type == TAGGING else "classification"


def check_tagging(experiment, strategy: str) -> None:
    """Refuse, before any weight loads, training options that read a label per example or its text."""
    train = experiment.train
    given = [key for key in ("label_smoothing", "rdrop_alpha", "augment") if getattr(train, key)]
    if given:
        key = given[0]
        raise ConfigError(f"{experiment.locate('train', key)}: train.{key} works on a label (or the text) per example; "
                          f"strategy '{strategy}' on task.type {TAGGING} reads a tag per word; remove train.{key}")


def check_fast(tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"token classification maps word pieces to words with a fast tokenizer's word_ids, and "
                          f"{type(tokenizer).__name__} is not fast; use a model with a tokenizer.json (a fast tokenizer)")


def aligned_labels(word_ids: list[int | None], tag_ids: list[int]) -> list[int]:
    """(T,) label per sub-token: the word's tag id on its first sub-token, IGNORE elsewhere."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(tag_ids[word] if word is not None and word != previous else IGNORE)
        if word is not None:
            previous = word
    return labels


def encode_words(tokenizer, examples: list[dict], max_length: int) -> tuple[list[dict], list[list[int | None]]]:
    """(features without labels, word_ids per example); truncated to max_length sub-tokens."""
    check_fast(tokenizer)
    if not examples:
        return [], []
    encoded = tokenizer([e["tokens"] for e in examples], is_split_into_words=True, truncation=True, max_length=max_length)
    features = [{key: values[i] for key, values in encoded.items()} for i in range(len(examples))]
    return features, [encoded.word_ids(i) for i in range(len(examples))]


def encode_tagged(tokenizer, examples: list[dict], tag_names: list[str], max_length: int) -> list[dict]:
    """Training / dev features: input ids plus aligned `labels`."""
    features, word_ids = encode_words(tokenizer, examples, max_length)
    index = {tag: i for i, tag in enumerate(tag_names)}
    for feature, words, example in zip(features, word_ids, examples):
        feature["labels"] = aligned_labels(words, [index[t] for t in example["tags"]])
    return features


def word_tags(logits: np.ndarray, word_ids: list[int | None], n_words: int, tag_names: list[str]) -> list[str]:
    """(n_words,) tags from one example's (T, L) logits read at each word's first sub-token; cut words: O."""
    tags, previous = [OUTSIDE] * n_words, None
    for position, word in enumerate(word_ids):
        if word is not None and word != previous:
            tags[word] = tag_names[int(logits[position].argmax())]
        if word is not None:
            previous = word
    return repair_iob2(tags)[0]


def dev_tags(logits, label_ids, tag_names: list[str]) -> tuple[list[str], list[str]]:
    """(predicted, gold) tag strings per dev sentence from the Trainer's padded (N, T, L) logits and (N, T) labels."""
    logits = logits[0] if isinstance(logits, tuple) else logits
    predictions, references = [], []
    for row_logits, row_labels in zip(logits, label_ids):
        keep = row_labels != IGNORE  # first sub-tokens of the words
        gold = [tag_names[i] for i in row_labels[keep]]
        predicted = repair_iob2([tag_names[i] for i in row_logits[keep].argmax(-1)])[0]
        predictions.append(" ".join(predicted))
        references.append(" ".join(gold))
    return predictions, references


def train_tagger(model, tokenizer, splits, experiment, tag_names: list[str], run_dir: Path):
    """Fine-tune on the tagged training split; dev sentences pick the best checkpoint by `metric_for_best`."""
    from transformers import DataCollatorForTokenClassification

    from tunelab.metrics import compute_metrics
    from tunelab.train import train_model

    max_length = experiment.model.max_length
    encode = lambda examples: encode_tagged(tokenizer, examples, tag_names, max_length)  # noqa: E731

    def score(logits, label_ids) -> dict:
        predictions, references = dev_tags(logits, label_ids, tag_names)
        return compute_metrics(experiment.metrics, predictions, references, labels=tag_names)

    return train_model(
        model, tokenizer, encode(splits.train), encode(splits.dev), experiment.train, run_dir, score_dev=score,
        metric_for_best=experiment.train.metric_for_best or experiment.metrics[0],
        collator=DataCollatorForTokenClassification(tokenizer),
    )


class TokenPredictor:
    """Tags each example's words with the model's token-classification head; batches sorted by length."""

    def __init__(self, strategy, model: torch.nn.Module, loaded):
        self.strategy, self.model, self.loaded = strategy, model, loaded

    def predict(self, examples: list[dict]) -> list[dict]:
        from transformers import DataCollatorWithPadding

        from tunelab.batching import by_length
        from tunelab.costs import model_device

        exp, names = self.strategy.experiment, self.strategy.label_names
        features, word_ids = encode_words(self.loaded.tokenizer, examples, exp.model.max_length)
        warn_cut(examples, word_ids, exp.model.max_length)
        rows = [dict(f, _index=i) for i, f in enumerate(features)]
        collate, device = DataCollatorWithPadding(self.loaded.tokenizer), model_device(self.model)

        def run(chunk: list[dict]) -> list[dict]:
            batch = {k: v.to(device) for k, v in collate([{k: v for k, v in r.items() if k != "_index"} for r in chunk]).items()}
            logits = self.model(**batch).logits.float().cpu().numpy()  # (B, T, L)
            out = []
            for row, row_logits in zip(chunk, logits):
                i = row["_index"]
                out.append({"prediction": " ".join(word_tags(row_logits, word_ids[i], len(examples[i]["tokens"]), names))})
            return out

        self.model.eval()
        with torch.inference_mode():
            return by_length(rows, lambda f: len(f["input_ids"]), exp.train.eval_batch_size, run)

    def save(self, directory: Path) -> None:
        self.strategy.save_artifact(self.model, directory, self.loaded)


def warn_cut(examples: list[dict], word_ids: list[list[int | None]], max_length: int) -> None:
    last = lambda words: max((w for w in words if w is not None), default=-1)  # noqa: E731
    cut = [e.get(SOURCE_KEY, "?") for e, words in zip(examples, word_ids) if last(words) + 1 < len(e["tokens"])]
    if cut:
        warnings.warn(f"{len(cut)} sentence(s) are longer than model.max_length={max_length} word pieces; their last "
                      f"words are tagged O (raise model.max_length): {', '.join(cut[:3])}", stacklevel=3)
