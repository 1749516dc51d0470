"""`span`: a new span head reads the answer of extractive QA as a start and an end token of the context.

The head (`AutoModelForQuestionAnswering`: one linear layer, two logits per token) is new, so it
pairs with the model changes a classification head pairs with (pairing key `head`); any model
with a fast tokenizer serves. This file holds the read-out's two halves, free of any model:

- `encode_windows`: question + context tokenised as a pair; a context longer than
  `model.max_length` is cut into overlapping windows (`stride` tokens shared by neighbours, the
  fast tokenizer's `return_overflowing_tokens`), each remembering its example and the character
  span of every context token (`offset_mapping`). Training labels: the first answer's first and
  last token in a window that holds all of it, else the [CLS] position 0 (the SQuAD recipe).
- `best_answer`: over all windows of an example, the span (start ≤ end, at most
  `max_answer_length` tokens, both inside the context) of highest start + end logit; its text is
  cut from the context by the offsets, so it is the context's own characters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tunelab.data.loaders import SOURCE_KEY
from tunelab.errors import DataError
from tunelab.readouts.registry import register

SPECIAL_TOKENS = 3  # [CLS] question [SEP] context [SEP]: what a BERT-style pair adds


@register("span", "a new span head reads the answer as start and end tokens of the context (extractive QA)",
          pairing="head", used_by="span (task.type extractive_qa)")
class SpanHead:
    def check(self, experiment, strategy: str) -> None:
        """Any model takes a new span head; the fast tokenizer it needs is checked with the data."""


@dataclass
class Window:
    example: int
    """Index of the example this window belongs to."""
    offsets: list[tuple[int, int] | None]
    """Character span in the context of each token; None for question and special tokens."""


def encode_windows(tokenizer, examples: list[dict], max_length: int, stride: int | None,
                   stride_key: str = "strategy.stride") -> tuple[list[dict], list[Window]]:
    """(features, windows), one per window, in example order. Examples with `answer_start` get
    `start_positions` / `end_positions`. Raises DataError naming the example's line when a question
    leaves no room for the context, or (stride None) a context does not fit in one window."""
    if not examples:
        return [], []
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("extractive QA needs a fast tokenizer (character offsets of tokens); this model's is not")
    check_room(tokenizer, examples, max_length, stride, stride_key)
    encoded = tokenizer([e["text"] for e in examples], [e["text_pair"] for e in examples], truncation="only_second",
                        max_length=max_length, stride=stride or 0, return_overflowing_tokens=True,
                        return_offsets_mapping=True)
    owners = encoded["overflow_to_sample_mapping"]
    if stride is None:
        refuse_overflow(owners, examples, max_length, stride_key)
    features, windows = [], []
    for i, owner in enumerate(owners):
        sequence = encoded.sequence_ids(i)
        offsets = [tuple(span) if part == 1 else None for span, part in zip(encoded["offset_mapping"][i], sequence)]
        feature = {key: encoded[key][i] for key in encoded if key not in ("offset_mapping", "overflow_to_sample_mapping")}
        example = examples[owner]
        if example.get("answer_start") is not None:
            start = example["answer_start"]
            feature["start_positions"], feature["end_positions"] = token_positions(offsets, start, start + len(example["target"]))
        features.append(feature)
        windows.append(Window(owner, offsets))
    return features, windows


def check_room(tokenizer, examples: list[dict], max_length: int, stride: int | None, stride_key: str) -> None:
    """The question must leave the context more tokens than the windows share (else no window advances)."""
    questions = tokenizer([e["text"] for e in examples], add_special_tokens=False)["input_ids"]
    for example, ids in zip(examples, questions):
        room = max_length - len(ids) - SPECIAL_TOKENS
        if room <= (stride or 0):
            where = example.get(SOURCE_KEY, "<data>")
            need = f"more than strategy.stride = {stride}" if stride else "at least one"
            raise DataError(f"{where}: the question takes {len(ids)} tokens, leaving {max(room, 0)} of model.max_length "
                            f"= {max_length} for the context, which needs {need}; raise model.max_length"
                            + (f" or lower {stride_key}" if stride else ""))


def refuse_overflow(owners: list[int], examples: list[dict], max_length: int, stride_key: str) -> None:
    """Without a stride, a context cut off would silently lose its answer: say which example and how to fix it."""
    counts = np.bincount(np.asarray(owners), minlength=len(examples))
    long = [examples[i].get(SOURCE_KEY, "<data>") for i in np.flatnonzero(counts > 1)]
    if long:
        more = f" (and {len(long) - 1} more)" if len(long) > 1 else ""
        raise DataError(f"{long[0]}{more}: question and context are longer than model.max_length = {max_length} "
                        f"tokens and {stride_key} is null, so the context would be cut; set {stride_key} (e.g. 128: "
                        f"overlapping windows over long contexts) or raise model.max_length")


def token_positions(offsets: list[tuple[int, int] | None], start: int, end: int) -> tuple[int, int]:
    """(first, last) token of the character span [start, end) in this window; (0, 0) when the window
    does not hold all of it (an answer cut by the window's edge is learnt from the window that holds it)."""
    inside = [i for i, span in enumerate(offsets) if span is not None]
    if not inside or offsets[inside[0]][0] > start or offsets[inside[-1]][1] < end:
        return 0, 0
    first = next(i for i in inside if offsets[i][1] > start)
    last = next(i for i in reversed(inside) if offsets[i][0] < end)
    return first, last


def best_answer(logits: list[tuple[np.ndarray, np.ndarray]], windows: list[Window], context: str,
                max_answer_length: int, n_best: int = 20) -> dict:
    """The best span over an example's windows: {"prediction", "outputs": {"answer_start", "score"}}.

    logits: per window, (start logits (T,), end logits (T,)) over its T tokens. Only the n_best
    highest starts and ends of each window are paired (the SQuAD recipe), so it is O(n_best²).
    """
    best, best_score = {"prediction": "", "outputs": {"answer_start": None, "score": None}}, float("-inf")
    for (starts, ends), window in zip(logits, windows):
        inside = np.array([span is not None for span in window.offsets])
        starts = np.where(inside, starts[: len(inside)], -np.inf)
        ends = np.where(inside, ends[: len(inside)], -np.inf)
        for i in np.argsort(starts)[::-1][:n_best]:
            for j in np.argsort(ends)[::-1][:n_best]:
                if not (inside[i] and inside[j]) or j < i or j - i + 1 > max_answer_length:
                    continue
                score = float(starts[i] + ends[j])
                if score > best_score:
                    begin, finish = window.offsets[i][0], window.offsets[j][1]
                    best_score = score
                    best = {"prediction": context[begin:finish], "outputs": {"answer_start": begin, "score": score}}
    return best
