"""Demonstrations in `pet`'s input (LM-BFF, Gao et al. 2021): prompt-based fine-tuning with context.

Each input is the example's prompt preceded by one filled-in prompt per label (or `per_label` of
them), drawn from the K-shot train split, in training and at test time::

    Review: <demo of label A>\\nSentiment: negative      <- demonstration_template over (template(demo), word)
                                                        <- demonstration_separator
    Review: <demo of label B>\\nSentiment: positive
    Review: <the query>\\nSentiment:                     <- the answer is read here, as without demonstrations

A masked LM sees the template with `{{ mask }}` filled by the label word in each demonstration.

- Training: one set of demonstrations per example, drawn once (seeded); never the example itself
  (nor another copy of its text: a duplicate would hand the model its label).
- Selection `random`: uniformly among the label's training examples. `similar`: LM-BFF's filter —
  uniformly among the `similar_fraction` (default half) of the label's examples most similar to the
  query, by cosine similarity of minilm-l6 sentence embeddings (mean pooled).
- Dev and test: `test_sets` independent sets per example; the prediction averages the label
  distributions of the sets, p(l | x) = (1 / S) · Σ_s softmax(z_s(x))_l. LM-BFF used 16 sets.
- Length: when a prompt is longer than model.max_length, every demonstration's text is cut to the
  same number of tokens (the largest that fits); the query is never cut for them. Only a query that
  alone does not fit loses demonstrations (then pet's usual truncation applies, with its warning).

Draws are keyed by the seed, the set and the example's text, so an example gets the same
demonstrations whatever the batch or order it is predicted in (a reloaded run predicts the same).
"""

from __future__ import annotations

import math
import random
from typing import Literal

import numpy as np
from pydantic import Field

from tunelab.prompts import example_text, fit_demonstrations
from tunelab.prompts.template import DEFAULT_DEMONSTRATION_TEMPLATE
from tunelab.settings import StrictSettings

TEXT_FIELDS = ("text", "text_pair")
RESERVED_TOKENS = 2  # BOS (causal) or [CLS] + [SEP] (masked) around the rendered prompt


class DemonstrationSettings(StrictSettings):
    per_label: int = Field(1, ge=1)
    """Demonstrations of each label in every input (LM-BFF: 1)."""
    selection: Literal["random", "similar"] = "random"
    """`random`, or `similar`: among each label's examples most similar to the query (minilm-l6 embeddings)."""
    similar_fraction: float = Field(0.5, gt=0, le=1)
    """`similar` draws from this fraction of each label's examples, the most similar ones (LM-BFF: the top half)."""
    test_sets: int = Field(4, ge=1)
    """Demonstration sets per dev/test example; their label distributions are averaged (LM-BFF: 16)."""


def draw_demonstrations(pool: list[dict], query: dict, labels: list[str], per_label: int, key: str,
                        similarity: np.ndarray | None = None, fraction: float = 1.0) -> list[dict]:
    """per_label pool examples of every label for `query`, in a random order; never the query itself.

    `similarity` (P,) ranks the pool for this query: only the best `fraction` of each label's
    candidates can be drawn. `key` seeds the draw (same key, same demonstrations).
    """
    rng = random.Random(key)
    text = example_text(query)
    chosen: list[dict] = []
    for label in labels:
        candidates = [i for i, ex in enumerate(pool) if str(ex["label"]) == label
                      and ex is not query and ex != query and example_text(ex) != text]
        if similarity is not None and candidates:
            candidates.sort(key=lambda i: -similarity[i])  # stable: ties keep pool order
            candidates = candidates[: max(1, math.ceil(fraction * len(candidates)))]
        chosen += [pool[i] for i in rng.sample(candidates, min(per_label, len(candidates)))]
    rng.shuffle(chosen)  # label order varies (a fixed order would teach a position bias)
    return chosen


class Demonstrations:
    """Draws and renders the demonstrations of one `pet` run (pool = the K-shot train split)."""

    def __init__(self, settings: DemonstrationSettings, pool: list[dict], labels: list[str], seed: int,
                 causal: bool, embed_fn=None):
        self.settings, self.pool, self.labels, self.seed, self.causal = settings, list(pool), list(labels), seed, causal
        self.embed_fn = embed_fn  # texts -> (N, H); loaded on first use by `similar`
        self._pool_vectors: np.ndarray | None = None

    def similarities(self, queries: list[dict]) -> list[np.ndarray | None]:
        """(P,) cosine similarity to the pool per query (`similar`), else None per query."""
        if self.settings.selection != "similar":
            return [None] * len(queries)
        if self.embed_fn is None:
            from tunelab.prompts.engine import make_embedder

            self.embed_fn = make_embedder()
        if self._pool_vectors is None:
            self._pool_vectors = unit(self.embed_fn([example_text(e) for e in self.pool]))  # (P, H)
        queries_vectors = unit(self.embed_fn([example_text(q) for q in queries]))  # (Q, H)
        return list(queries_vectors @ self._pool_vectors.T)  # Q rows of (P,)

    def sets(self, queries: list[dict], count: int) -> list[list[list[dict]]]:
        """sets[s][i]: the demonstrations of query i in set s (s < count)."""
        sims = self.similarities(queries)
        s = self.settings
        return [[draw_demonstrations(self.pool, q, self.labels, s.per_label, f"{self.seed}/{n}/{example_text(q)}",
                                     sim, s.similar_fraction) for q, sim in zip(queries, sims)]
                for n in range(count)]

    def render(self, engine, plan, row: dict, demos: list[dict], max_length: int) -> tuple[str, str]:
        """(prefix, query) with the demonstrations, their texts cut to fit `max_length` (the query never)."""
        plan = self.demonstration_plan(plan)
        rows = [self.filled(d, plan) for d in demos]
        budget = max_length - RESERVED_TOKENS
        text_of = lambda kept: "".join(engine.render(plan, row, kept))  # noqa: E731
        if engine.count_tokens(text_of(rows)) <= budget:
            return engine.render(plan, row, rows)
        limit = self.longest_fitting_cut(engine, rows, text_of, budget)
        if limit is None:  # even empty demonstrations do not fit: drop them (pet then cuts the query, warning)
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kept = fit_demonstrations([cut(engine.tokenizer, r, 0) for r in rows], text_of, engine.count_tokens, budget)
            return engine.render(plan, row, kept)
        return engine.render(plan, row, [cut(engine.tokenizer, r, limit) for r in rows])

    @staticmethod
    def longest_fitting_cut(engine, rows: list[dict], text_of, budget: int) -> int | None:
        """The largest L such that every demonstration cut to L tokens of text fits (binary search); None if 0 does not."""
        longest = max(len(token_ids(engine.tokenizer, r.get(f))) for r in rows for f in TEXT_FIELDS)
        fits = lambda n: engine.count_tokens(text_of([cut(engine.tokenizer, r, n) for r in rows])) <= budget  # noqa: E731
        if not fits(0):
            return None
        low, high = 0, longest  # fits(low) holds; fits(longest) does not (else no cut was needed)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if fits(middle) else (low, middle)
        return low

    def demonstration_plan(self, plan):
        """Masked LMs: a demonstration is the template with its mask filled, not template + answer."""
        if self.causal or plan.prompt.get("demonstration_template") != DEFAULT_DEMONSTRATION_TEMPLATE:
            return plan
        return plan.replace(prompt={**plan.prompt, "demonstration_template": "{{ prompt }}"})

    def filled(self, demo: dict, plan) -> dict:
        return demo if self.causal else {**demo, "mask": plan.answer_of(demo)}


def token_ids(tokenizer, text) -> list[int]:
    return [] if text is None else tokenizer(str(text), add_special_tokens=False)["input_ids"]


def cut(tokenizer, example: dict, limit: int) -> dict:
    """The example with its text fields cut to their first `limit` tokens."""
    out = dict(example)
    for name in TEXT_FIELDS:
        if example.get(name) is not None:
            ids = token_ids(tokenizer, example[name])
            if len(ids) > limit:
                out[name] = tokenizer.decode(ids[:limit]).strip()
    return out


def unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

