"""Helpers to choose which parameters train: heads, layers, biases, name patterns."""

from __future__ import annotations

import re

import torch

HEAD_MODULES = ("classifier", "score")
"""Top-level modules of a classification head (BERT-style: `classifier`; Llama-style: `score`)."""
LAYER_INDEX = re.compile(r"\.(?:layer|layers|h|blocks)\.(\d+)\.")
EMBEDDING_HINTS = ("embed", "wte", "wpe", "position_embeddings", "word_embeddings")


def freeze_all(model: torch.nn.Module) -> None:
    for param in model.parameters():
        param.requires_grad_(False)


def unfreeze(model: torch.nn.Module, keep) -> list[str]:
    """Make trainable every parameter whose name satisfies keep(name); return those names."""
    names = []
    for name, param in model.named_parameters():
        if keep(name):
            param.requires_grad_(True)
            names.append(name)
    return names


def is_head(name: str, new_weights: list[str]) -> bool:
    """The task head: newly initialised weights, or the conventional head modules."""
    return name in new_weights or name.split(".")[0] in HEAD_MODULES


def head_of(loaded, target):
    """name -> whether it belongs to the read-out's head that always trains: the classification head
    under a `head` read-out; nothing under an `lm` read-out (the pretrained LM head is no new weight)."""
    if target.readout == "head":
        return lambda name: is_head(name, loaded.missing_keys)
    return lambda name: False


def layer_index(name: str) -> int | None:
    match = LAYER_INDEX.search("." + name)
    return int(match.group(1)) if match else None


def num_layers(model: torch.nn.Module) -> int:
    indices = {layer_index(name) for name, _ in model.named_parameters()}
    indices.discard(None)
    return max(indices) + 1 if indices else 0


def is_embedding(name: str) -> bool:
    return layer_index(name) is None and any(hint in name for hint in EMBEDDING_HINTS)
