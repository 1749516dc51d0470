"""Inputs of a classification head: text (and text pair) tokenised, labels as class indices.

Used alike to train (`train_model` gets these features) and to predict (`ClassifierPredictor`).
"""

from __future__ import annotations


def encode_classification(tokenizer, examples: list[dict], label_names: list[str], max_length: int) -> list[dict]:
    """Tokenise without padding (the collator pads each batch to its own longest sequence)."""
    if not examples:
        return []  # no dev split: the tokenizer cannot encode an empty batch
    label_ids = {name: i for i, name in enumerate(label_names)}
    pairs = [e.get("text_pair") for e in examples]
    texts = [e["text"] for e in examples]
    encoded = tokenizer(texts, pairs if any(p is not None for p in pairs) else None, truncation=True, max_length=max_length)
    features = []
    for i, example in enumerate(examples):
        feature = {key: values[i] for key, values in encoded.items()}
        if example.get("label") is not None:
            feature["labels"] = label_ids[example["label"]]
        features.append(feature)
    return features
