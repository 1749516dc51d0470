"""Automatic prompt search: LM-BFF label-word selection and choosing a template by dev score.

Neither looks at the test split: label words are ranked on the (K-shot) training examples, and a
template (with its searched words) is chosen by the dev split's metric.

Label words (Gao et al., 2021, simplified; `tunelab.prompts.search_label_words` has the formula):
candidates are the user's words, or — when none are given — the `vocabulary_top_k` most likely
vocabulary tokens at the answer position for each class (mean log-probability over that class's
training prompts, whole-word tokens only). Each class then gets the `top_n` words whose
log-likelihood best separates it from the other classes. A candidate of several tokens is scored
by the MEAN of its tokens' log-probabilities (`word_score: mean`, so a long word is not
penalised for its length) or by their sum (`word_score: sum`, the word's log-likelihood).

Pruning on dev (`dev_top_n` > 1, LM-BFF's second stage): each class's `dev_top_n` best words
form candidate verbalizers (one word per class, ranked by the sum of the words' ranks on train);
the `dev_top_n` best of them are scored on the dev split and the best by the dev metric is kept.
Every candidate and its dev score is recorded (`prompt.json`, the report's prompt-search table).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from tunelab.errors import ConfigError
from tunelab.metrics import get_metric
from tunelab.prompts import search_label_words
from tunelab.prompts.engine import PromptEngine
from tunelab.prompts.plan import PromptPlan
from tunelab.scoring import bos_to_add
from tunelab.settings import StrictSettings


class LabelWordSearch(StrictSettings):
    """`strategy.search_label_words`: pick each label's words automatically on the training split."""

    candidates: list[str] | None = None
    """Words to choose from (each may be several tokens). Default: the model's likeliest vocabulary tokens."""
    top_n: int = Field(1, gt=0)
    """How many words each label gets."""
    vocabulary_top_k: int = Field(30, gt=0)
    """Without `candidates`: this many likeliest whole-word tokens per class become candidates."""
    word_score: Literal["mean", "sum"] = "mean"
    """A candidate of several tokens scores the mean of its tokens' log-probabilities, or their sum."""
    dev_top_n: int = Field(1, gt=0)
    """Candidate verbalizers scored on the dev split (the best by dev metric is kept); 1: the training ranking decides."""

    @model_validator(mode="after")
    def _one_word_when_pruning(self):
        if self.dev_top_n > 1 and self.top_n != 1:
            raise ValueError("dev_top_n > 1 compares verbalizers of one word per label; set top_n: 1")
        return self


def search_plan_words(engine: PromptEngine, plan: PromptPlan, train: list[dict], search: LabelWordSearch) -> tuple[dict, dict]:
    """(verbalizer {label: [words]}, record of the search) for `plan`'s template, on zero-shot prompts."""
    zero = plan.replace(demonstrations=[], k=0, calibration=None,
                        length_norm="token" if search.word_score == "mean" else "none")
    if search.candidates:
        candidates = list(search.candidates)
        score_fn = lambda examples, words: engine.word_scores(zero, examples, words)  # noqa: E731
    else:
        logprobs = next_token_logprobs(engine, zero, train)  # (N, V)
        column = vocabulary_candidates(engine.tokenizer, logprobs, train, plan.labels, search.vocabulary_top_k,
                                       after_space=engine.build(zero, train[:1])[0].query[-1:].isspace())
        candidates = list(column)
        score_fn = lambda examples, words: logprobs[:, [column[w] for w in words]]  # noqa: E731
    per_label = max(search.top_n, search.dev_top_n)
    chosen = search_label_words(score_fn, train, candidates, labels=plan.labels, top_n=per_label)
    ranked = {str(label): list(ws) for label, ws in chosen.items()}
    if search.dev_top_n == 1:
        return ranked, {"candidates": candidates, "chosen": ranked, "word_score": search.word_score}
    verbalizers = candidate_verbalizers(ranked, search.dev_top_n)
    return verbalizers[0], {"candidates": candidates, "ranked": ranked, "word_score": search.word_score,
                            "verbalizers": verbalizers}


def candidate_verbalizers(ranked: dict[str, list[str]], n: int) -> list[dict[str, list[str]]]:
    """The n best one-word-per-label verbalizers from each label's ranked words (by the sum of ranks)."""
    labels = list(ranked)
    combos = sorted(itertools.product(*(range(len(ranked[label])) for label in labels)), key=sum)  # stable
    return [{label: [ranked[label][r]] for label, r in zip(labels, combo)} for combo in combos[:n]]


def choose_words_on_dev(plan: PromptPlan, record: dict, dev: list[dict], evaluate, metric: str) -> tuple[PromptPlan, dict]:
    """Score each candidate verbalizer of a search record on dev; (plan with the best, record with the scores).

    `evaluate(plan, examples) -> metrics` scores zero-shot (or few-shot) with the plan as given.
    """
    verbalizers = record.get("verbalizers")
    if not verbalizers:
        return plan.replace(verbalizer=record["chosen"]), record
    if not dev:
        raise ConfigError("label-word search with dev_top_n > 1 chooses on the dev split: set data.dev or data.k_shot")
    scored = [{"words": words, "dev": evaluate(plan.replace(verbalizer=words), dev)} for words in verbalizers]
    best = choose_by_dev(scored, metric)
    record = {**record, "verbalizers": scored, "metric": metric, "chosen": scored[best]["words"]}
    return plan.replace(verbalizer=scored[best]["words"]), record


def next_token_logprobs(engine: PromptEngine, plan: PromptPlan, examples: list[dict], batch_size: int = 8) -> np.ndarray:
    """(N, V) log p(next token | full prompt) at the answer position, prompts tokenised as the scorer does."""
    tokenizer, model = engine.tokenizer, engine.model
    bos = bos_to_add(tokenizer)
    rows = [bos + list(tokenizer(r.text, add_special_tokens=False)["input_ids"]) for r in engine.build(plan, examples)]
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            width = max(len(r) for r in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long)  # (B, T), right-padded
            mask = torch.zeros_like(ids)
            for i, row in enumerate(chunk):
                ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
            keep = torch.zeros_like(ids, dtype=torch.bool)
            keep[torch.arange(len(chunk)), mask.sum(1) - 1] = True  # the last real token of each row
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), logits_to_keep=keep.to(device)).logits
            out.append(torch.log_softmax(logits.float(), dim=-1).cpu().numpy())  # (B, V)
    return np.concatenate(out)


def vocabulary_candidates(tokenizer, logprobs: np.ndarray, examples: list[dict], labels: list[str], top_k: int,
                          *, after_space: bool) -> dict[str, int]:
    """{word: token id}: per class, its `top_k` likeliest whole-word tokens (mean log-prob over its examples).

    A whole-word token is letters only and must be exactly the token the scorer will read for the
    word: " word" after a prompt that ends without whitespace, "word" after one that ends with it
    (`after_space`). This works alike for BPE ("Ġword") and WordPiece ("word", not "##ing") vocabularies.
    """
    chosen: dict[str, int] = {}
    for label in labels:
        rows = [i for i, ex in enumerate(examples) if str(ex["label"]) == str(label)]
        if not rows:
            raise ConfigError(f"label-word search: the training split has no example of label {label!r}")
        found = 0
        for token_id in np.argsort(-logprobs[rows].mean(axis=0), kind="stable").tolist():
            if found == top_k:
                break
            text = tokenizer.decode([token_id]).strip()
            word = text if after_space else " " + text
            if len(text) > 1 and text.isalpha() and tokenizer(word, add_special_tokens=False)["input_ids"] == [token_id]:
                found += 1
                chosen.setdefault(word, token_id)
    return chosen


SEARCH_FILE = "prompt_search.json"
"""Beside the cell's results (kept without `save_artifacts` too): the candidates and their dev scores, for the report."""


def write_search_record(run_dir, search: dict) -> None:
    (Path(run_dir) / SEARCH_FILE).write_text(json.dumps(search, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def choose_by_dev(records: list[dict], metric: str) -> int:
    """Index of the best record by its dev `metric` (ties keep the user's order)."""
    sign = 1.0 if get_metric(metric).higher_is_better else -1.0
    scores = [sign * float(r["dev"][metric]) for r in records]
    return int(np.argmax(scores))
