"""Choosing in-context demonstrations from a training pool, and fitting them into the context.

Methods (all deterministic for a given seed):

- ``random``: k examples drawn without replacement.
- ``balanced``: class-balanced round-robin; classes are visited in a seeded random order and each
  class's examples are shuffled, so k=4 with two classes gives A B A B (or B A B A).
- ``nearest``: the k pool examples most similar to the query by cosine similarity of sentence
  embeddings (Liu et al., 2022, "What Makes Good In-Context Examples for GPT-3?"), ordered with the
  most similar LAST, i.e. right before the query.

A pool example equal to the query is never chosen as its own demonstration.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from tunelab.batching import by_length
from tunelab.errors import ConfigError

Example = Mapping[str, Any]
EmbedFn = Callable[[list[str]], np.ndarray]
Method = Literal["random", "balanced", "nearest"]


class DemonstrationsDroppedWarning(UserWarning):
    """Some demonstrations did not fit the model's context and were left out."""


def example_text(example: Example) -> str:
    """The text embedded for `nearest`: ``text`` (and ``text_pair`` after a space)."""
    return " ".join(str(example[f]) for f in ("text", "text_pair") if example.get(f) is not None)


def _without(pool: Sequence[Example], query: Example | None) -> list[Example]:
    return [ex for ex in pool if query is None or (ex is not query and ex != query)]


def select_random(pool: Sequence[Example], k: int, *, seed: int = 0) -> list[Example]:
    return random.Random(seed).sample(list(pool), min(k, len(pool)))


def select_balanced(pool: Sequence[Example], k: int, *, seed: int = 0, label_key: str = "label") -> list[Example]:
    rng = random.Random(seed)
    by_label: dict[Any, list[Example]] = {}
    for ex in pool:
        by_label.setdefault(ex[label_key], []).append(ex)
    queues = list(by_label.values())
    for queue in queues:
        rng.shuffle(queue)
    rng.shuffle(queues)  # which class comes last (recency bias) depends on the seed, not the data order
    chosen: list[Example] = []
    while len(chosen) < k and any(queues):
        for queue in queues:
            if queue and len(chosen) < k:
                chosen.append(queue.pop(0))
    return chosen


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def nearest_demonstrations(
    pool: Sequence[Example],
    queries: Sequence[Example],
    k: int,
    embed_fn: EmbedFn,
    *,
    text_fn: Callable[[Example], str] = example_text,
    pool_embeddings: np.ndarray | None = None,
) -> list[list[Example]]:
    """For each query, its k most similar pool examples, least similar first, most similar last.

    The pool is embedded once (or pass `pool_embeddings`, (P, H)); queries in one call, (Q, H).
    Ties keep pool order (an earlier pool example counts as more similar).
    """
    if not pool or not queries or k <= 0:
        return [[] for _ in queries]
    if pool_embeddings is None:
        pool_embeddings = embed_fn([text_fn(ex) for ex in pool])
    pool_vecs = _unit(pool_embeddings)  # (P, H)
    query_vecs = _unit(embed_fn([text_fn(q) for q in queries]))  # (Q, H)
    if len(pool_vecs) != len(pool):
        raise ValueError(f"pool_embeddings has {len(pool_vecs)} rows for a pool of {len(pool)} examples")
    sims = query_vecs @ pool_vecs.T  # (Q, P) cosine similarities
    result = []
    for q, query in enumerate(queries):
        row = sims[q].copy()
        row[[i for i, ex in enumerate(pool) if ex is query or ex == query]] = -np.inf
        order = [int(i) for i in np.argsort(-row, kind="stable") if np.isfinite(row[i])][:k]
        result.append([pool[i] for i in reversed(order)])
    return result


def select_demonstrations(
    pool: Sequence[Example],
    k: int,
    method: Method = "random",
    *,
    seed: int = 0,
    query: Example | None = None,
    embed_fn: EmbedFn | None = None,
    label_key: str = "label",
    text_fn: Callable[[Example], str] = example_text,
) -> list[Example]:
    """k demonstrations for `query` (fewer if the pool is smaller); see the module docstring."""
    if k <= 0:
        return []
    if method == "nearest":
        if query is None or embed_fn is None:
            raise ConfigError("demonstration selection 'nearest' needs the query and an embedding function")
        return nearest_demonstrations(pool, [query], k, embed_fn, text_fn=text_fn)[0]
    candidates = _without(pool, query)
    if method == "random":
        return select_random(candidates, k, seed=seed)
    if method == "balanced":
        return select_balanced(candidates, k, seed=seed, label_key=label_key)
    raise ConfigError(f"unknown demonstration selection {method!r}; choose random, balanced or nearest")


def fit_demonstrations(
    demos: Sequence[Any],
    render_fn: Callable[[list[Any]], str],
    count_tokens_fn: Callable[[str], int],
    budget_tokens: int,
) -> list[Any]:
    """Drop demonstrations from the front until the rendered prompt fits `budget_tokens`.

    ``render_fn(kept_demos)`` renders the whole prompt (query included) with those demonstrations;
    ``count_tokens_fn(text)`` counts its tokens. The front goes first because selection puts the
    least relevant demonstrations there (`nearest` orders most-similar last). Warns with
    `DemonstrationsDroppedWarning` saying how many were dropped, and again if even the prompt
    without demonstrations is over budget (the caller truncates).
    """
    kept = list(demos)
    while kept and count_tokens_fn(render_fn(kept)) > budget_tokens:
        kept.pop(0)
    dropped = len(demos) - len(kept)
    if dropped:
        warnings.warn(f"dropped {dropped} of {len(demos)} demonstrations to fit the prompt into {budget_tokens} tokens",
                      DemonstrationsDroppedWarning, stacklevel=2)
    if not kept and count_tokens_fn(render_fn(kept)) > budget_tokens:
        warnings.warn(f"the prompt is longer than {budget_tokens} tokens even without demonstrations",
                      DemonstrationsDroppedWarning, stacklevel=2)
    return kept


def embed_texts(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 32, max_length: int = 256) -> np.ndarray:
    """Sentence embeddings, (N, H) float32: mean of the last hidden states over real tokens, L2-normalised.

    This is the all-MiniLM-L6-v2 (sentence-transformers) recipe. Texts are batched by length to
    pad little; the output keeps the input order.
    """
    import torch
    import torch.nn.functional as F

    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, model.config.hidden_size), dtype=np.float32)
    device = next(model.parameters()).device

    def run(chunk: list[str]) -> np.ndarray:
        enc = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
        outputs = model(**enc, output_hidden_states=True)
        hidden = getattr(outputs, "last_hidden_state", None)
        hidden = (hidden if hidden is not None else outputs.hidden_states[-1]).float()  # (B, T, H)
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)  # (B, H)
        return F.normalize(pooled, p=2, dim=-1).cpu().numpy()

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = by_length(texts, len, batch_size, run, longest_first=False)
    finally:
        model.train(was_training)
    return np.stack(out).astype(np.float32)


def make_embed_fn(model: Any, tokenizer: Any, batch_size: int = 32, max_length: int = 256) -> EmbedFn:
    """An `embed_fn` for `nearest` selection backed by `embed_texts`."""
    return lambda texts: embed_texts(model, tokenizer, texts, batch_size=batch_size, max_length=max_length)
