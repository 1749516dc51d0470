"""Rendering and scoring of prompt plans (see `tunelab.prompts.plan` for the whole flow).

`PromptEngine` turns a `PromptPlan` and examples into the exact text the model reads (chat template
included), fits demonstrations into the context, and scores the candidates with the prefix-cached
engine of `tunelab.scoring`: examples whose prompts share a prefix (parts and fixed demonstrations)
are scored in one `score_requests` call, so the prefix runs once.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from tunelab.data.loaders import SOURCE_KEY
from tunelab.errors import ConfigError
from tunelab.outputs import label_outputs
from tunelab.prompts import (
    DemonstrationsDroppedWarning,
    Verbalizer,
    apply_chat_template_parts,
    build_prompt_parts,
    calibrate,
    fit_demonstrations,
    nearest_demonstrations,
    resolve_template,
    template_fields,
)
from tunelab.prompts.plan import PromptPlan, save_plan
from tunelab.scoring import CandidateScore, ScoreRequest, ScoringStats, score_requests


def with_delimiter(query: str, word: str) -> str:
    """lm-eval's target delimiter: exactly one space between prompt and word, none after a newline.

    A prompt ending in whitespace (e.g. a chat template's "assistant\\n") takes the word without its
    leading whitespace; otherwise a word without leading whitespace gets one space.
    """
    if not query or query[-1].isspace():
        return word.lstrip() or word
    return word if word[:1].isspace() else " " + word


def normalised(score: CandidateScore, candidate: str, how: str) -> float:
    """`none`: summed log-prob; `token`: per token; `char`: per character (lm-eval's acc_norm)."""
    if how == "token":
        return score.logprob_mean
    if how == "char":
        return score.logprob_sum / max(len(candidate), 1)
    return score.logprob_sum


def make_embedder(device: str = "cpu") -> Callable[[list[str]], np.ndarray]:
    """Sentence embeddings for `nearest` demonstrations: minilm-l6, mean-pooled (prompts.embed_texts)."""
    from tunelab.models import load_model
    from tunelab.prompts import make_embed_fn

    loaded = load_model("minilm-l6", "base", device=device)
    return make_embed_fn(loaded.model, loaded.tokenizer)


@dataclass
class Rendered:
    """One example's prompt as the model sees it: ``prefix + query`` then one of ``candidates``."""

    example: dict
    prefix: str
    """Shared by every example with the same demonstrations (its KV cache is computed once)."""
    query: str
    candidates: list[str]
    demonstrations: int
    """How many demonstrations are in the prompt (fewer than k when some did not fit)."""

    @property
    def text(self) -> str:
        return self.prefix + self.query


class PromptEngine:
    """Renders prompts and scores candidates with one causal LM (`model` may be set later)."""

    def __init__(self, tokenizer, model=None, *, max_length: int, batch_size: int = 32, embed_fn=None):
        self.tokenizer, self.model, self.max_length, self.batch_size = tokenizer, model, max_length, batch_size
        self.embed_fn = embed_fn  # texts -> (N, H) embeddings; needed by `nearest` selection only
        self.stats = ScoringStats()
        self.cache = None  # a `score_cache.ScoreCache` when `model` is the unchanged pretrained LM in a sweep

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # --- rendering ---------------------------------------------------------------------------

    def render(self, plan: PromptPlan, example: dict, demonstrations: list[dict]) -> tuple[str, str]:
        """(prefix, query) after the chat template, ``prefix`` the example-independent part."""
        settings = plan.settings
        pairs = [(demo, plan.answer_of(demo)) for demo in demonstrations]
        prefix, query = build_prompt_parts(settings, example, pairs, demonstrations_fixed=plan.selection != "nearest")
        return apply_chat_template_parts(self.tokenizer, prefix, query, settings.use_chat_template)

    def candidates(self, plan: PromptPlan, example: dict, query: str) -> list[str]:
        words = example["choices"] if plan.verbalizer is None else [w for label in plan.labels for w in plan.verbalizer[label]]
        return [with_delimiter(query, word) for word in words]

    def demonstrations_for(self, plan: PromptPlan, examples: list[dict]) -> list[list[dict]]:
        if plan.selection == "nearest" and plan.k:
            if self.embed_fn is None:
                self.embed_fn = make_embedder()
            return nearest_demonstrations(plan.pool, examples, plan.k, self.embed_fn)
        return [plan.demonstrations] * len(examples)

    def build(self, plan: PromptPlan, examples: list[dict]) -> list[Rendered]:
        """Render every example; drop demonstrations (from the front) where the prompt would not fit."""
        rendered, shortened, dropped = [], 0, 0
        for example, demos in zip(examples, self.demonstrations_for(plan, examples)):
            kept = self._fit(plan, example, list(demos))
            prefix, query = self.render(plan, example, kept)
            rendered.append(Rendered(example, prefix, query, self.candidates(plan, example, query), len(kept)))
            shortened += len(kept) < len(demos)
            dropped += len(demos) - len(kept)
        if shortened:  # one summary instead of a warning per example
            warnings.warn(f"dropped {dropped} demonstrations in {shortened} of {len(examples)} prompts so that they fit "
                          f"into {self.max_length} tokens (model.max_length)", DemonstrationsDroppedWarning, stacklevel=2)
        return rendered

    def _fit(self, plan: PromptPlan, example: dict, demos: list[dict]) -> list[dict]:
        if not demos:
            return demos
        render_text = lambda kept: "".join(self.render(plan, example, kept))  # noqa: E731
        _, query = self.render(plan, example, [])
        longest = max(self.count_tokens(c) for c in self.candidates(plan, example, query))
        budget = self.max_length - longest - 1  # 1: a BOS the scorer may add
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DemonstrationsDroppedWarning)  # `build` warns once for all
            return fit_demonstrations(demos, render_text, self.count_tokens, budget)

    def check_lengths(self, plan: PromptPlan, examples: list[dict], split: str) -> None:
        """ConfigError when an example's prompt, without demonstrations, cannot fit the context."""
        if not examples:
            return
        zero = plan.replace(demonstrations=[], k=0)
        rendered = self.build(zero, examples)
        texts = [r.text for r in rendered] + [c for r in rendered for c in r.candidates]
        counts = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        prompt_tokens, offset = counts[: len(rendered)], len(rendered)
        for r, tokens in zip(rendered, prompt_tokens):
            longest = max(counts[offset : offset + len(r.candidates)])
            offset += len(r.candidates)
            if tokens + longest + 1 > self.max_length:
                source = r.example.get(SOURCE_KEY, f"a {split} example")
                raise ConfigError(
                    f"the prompt for {source} ({split} split) takes {tokens} tokens plus {longest} for its longest "
                    f"answer, more than the context of {self.max_length} tokens (model.max_length, capped by the "
                    f"model's positions); raise model.max_length or shorten prompt.template and its parts"
                )

    # --- scoring -----------------------------------------------------------------------------

    def candidate_scores(self, plan: PromptPlan, rendered: list[Rendered]) -> list[np.ndarray]:
        """Per example, (C,) normalised log-likelihoods of its candidates; one engine call per prefix."""
        if self.model is None:
            raise RuntimeError("PromptEngine.model is not set: load the model before scoring")
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(rendered):
            groups.setdefault(r.prefix, []).append(i)
        out: list[np.ndarray] = [np.zeros(0)] * len(rendered)
        for prefix, indices in groups.items():
            start = self.shared_start(prefix, [rendered[i].query for i in indices])
            requests = [ScoreRequest(rendered[i].query[len(start) :], rendered[i].candidates) for i in indices]
            score = self.cache.score if self.cache is not None else score_requests
            rows = score(self.model, self.tokenizer, requests, shared_prefix=prefix + start,
                         batch_size=self.batch_size, stats=self.stats)
            for i, row in zip(indices, rows):
                out[i] = np.array([normalised(s, c, plan.length_norm) for s, c in zip(row, rendered[i].candidates)])
        return out

    def shared_start(self, prefix: str, queries: list[str]) -> str:
        """The start every query shares (e.g. "Review:"), to be cached with the prefix; '' if none.

        Cut just before whitespace: BPE, SentencePiece and WordPiece tokenizers all start a new token
        there, so the cut text tokenizes alike alone and inside each prompt (checked on the first
        query; the scorer checks every request and falls back, slower but exact, if one differs).
        Saves re-running those tokens for every example: ~10% of an SST-2 query.
        """
        if len(queries) < 2:
            return ""
        common = os.path.commonprefix(queries)
        cuts = [i for i, char in enumerate(common) if char.isspace()]
        start = common[: cuts[-1]].rstrip() if cuts else ""
        if not start:
            return ""
        ids = lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        cached = ids(prefix + start)
        return start if ids(prefix + queries[0])[: len(cached)] == cached else ""

    def word_scores(self, plan: PromptPlan, examples: list[dict], words: list[str]) -> np.ndarray:
        """(N, W) normalised log-likelihoods of arbitrary answer words after each prompt (label-word search)."""
        rendered = self.build(plan, examples)
        for r in rendered:
            r.candidates = [with_delimiter(r.query, word) for word in words]
        return np.stack(self.candidate_scores(plan, rendered))

    def label_scores(self, plan: PromptPlan, examples: list[dict]) -> np.ndarray:
        """(N, L) uncalibrated label scores of a classification plan."""
        verbalizer = Verbalizer(plan.verbalizer, labels=plan.labels)
        words = np.stack(self.candidate_scores(plan, self.build(plan, examples)))  # (N, W)
        return verbalizer.aggregate(words, plan.aggregation)

    def predict(self, plan: PromptPlan, examples: list[dict]) -> list[dict]:
        if not examples:
            return []
        if plan.verbalizer is None:  # multiple choice: the best of the example's own choices
            rows = self.candidate_scores(plan, self.build(plan, examples))
            return [{"prediction": ex["choices"][int(np.argmax(row))], "scores": dict(zip(ex["choices"], row.tolist()))}
                    for ex, row in zip(examples, rows)]
        scores = self.label_scores(plan, examples)  # (N, L)
        if plan.calibration is not None:
            scores = np.log(calibrate(softmax(scores), np.asarray(plan.calibration)))
        return label_outputs(scores, plan.labels)


def softmax(scores: np.ndarray) -> np.ndarray:
    """(N, L) log-scores -> (N, L) distributions over labels."""
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def content_free_probs(engine: PromptEngine, plan: PromptPlan, text_fields: tuple[str, ...] = ("text", "text_pair")) -> list[float]:
    """p_cf (L,): the label distribution for content-free inputs, averaged (Zhao et al., 2021).

    Every field the template reads (and the text fields) is replaced by the content-free input, so
    the prompt keeps its layout and demonstrations but carries no content.
    """
    settings = plan.settings
    fields = template_fields(resolve_template(settings, set(text_fields))) | {"text"}
    examples = [{f: value for f in fields} for value in plan.content_free_inputs]
    probs = softmax(engine.label_scores(plan.replace(calibration=None), examples))  # (I, L)
    return probs.mean(axis=0).tolist()


class PromptPredictor:
    """Labels examples by scoring a plan's candidates; `save` writes the plan as ``prompt.json``."""

    def __init__(self, engine: PromptEngine, plan: PromptPlan):
        self.engine, self.plan = engine, plan

    def predict(self, examples: list[dict]) -> list[dict]:
        return self.engine.predict(self.plan, examples)

    def save(self, directory: Path) -> None:
        save_plan(self.plan, directory)


def preview(engine: PromptEngine, plan: PromptPlan, examples: list[dict]) -> list[str]:
    """Human-readable blocks: the exact text the model reads, then its candidates (for `tunelab prompt`)."""
    blocks = []
    for n, r in enumerate(engine.build(plan, examples), start=1):
        source = r.example.get(SOURCE_KEY, f"example {n}")
        gold = f" (label: {r.example['label']})" if "label" in r.example else ""
        head = f"=== prompt {n}: {source}{gold}, {r.demonstrations} demonstrations, {engine.count_tokens(r.text)} tokens ==="
        blocks.append(f"{head}\n{r.text}\n--- candidates: " + " | ".join(repr(c) for c in r.candidates))
    return blocks
