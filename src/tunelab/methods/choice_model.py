"""The pieces of `pet_choices` that touch tensors: feature encoding, the collator, the loss module.

A feature is one multiple-choice example: ``input_ids`` (one token list per choice: the prompt's tokens then
the choice's, split as `zero_shot` splits them, `tunelab.scoring.encode_candidates`), ``target_starts`` (per
choice, where its tokens begin), ``norms`` (per choice, what its summed log-likelihood is divided by: 1, its
token count or its character count, `prompt.length_norm`) and ``labels`` (the gold choice's index) when the
example has one. The model scores every choice of a batch in one forward pass::

    s[b, c] = Σ_t log p(choice_c,t | prompt_b, choice_c,<t) / norm[b, c]      (B, C)  C: the most choices
    loss    = cross-entropy(softmax over the example's own choices, gold choice)

Missing choices (an example with fewer than C) score PAD_SCORE, which no softmax gives weight.
"""

from __future__ import annotations

import warnings

import torch

from tunelab.methods.pet_model import virtual_tokens
from tunelab.scoring import encode_candidates

PAD_SCORE = -1.0e9
"""The score of a choice slot an example does not have: exp(PAD_SCORE - any real score) is 0."""


def choice_norm(choice: str, token_count: int, how: str) -> float:
    """`none`: the sum as it is; `token`: per token; `char`: per character (as `prompts.engine.normalised`)."""
    return {"none": 1.0, "token": float(token_count), "char": float(max(len(choice), 1))}[how]


def keep_last(context: list[int], choice: list[int], max_length: int) -> list[int]:
    """Context + choice within max_length, cutting the context's start (the question and cue stay)."""
    room = max(max_length - len(choice), 1)
    return context[-room:] + choice


def encode_choices(tokenizer, texts: list[tuple[str, str]], examples: list[dict], length_norm: str,
                   max_length: int, split: str) -> list[dict]:
    """One feature per (prefix, query) rendering and its example's `choices` (see the module docstring)."""
    from tunelab.prompts.engine import with_delimiter

    features, cut = [], 0
    for (prefix, query), example in zip(texts, examples):
        candidates = [with_delimiter(query, choice) for choice in example["choices"]]
        context, choices = encode_candidates(tokenizer, prefix + query, candidates)
        cut += any(len(context) + len(ids) > max_length for ids in choices)
        rows = [keep_last(context, ids, max_length) for ids in choices]
        feature = {"input_ids": rows, "target_starts": [len(row) - len(ids) for row, ids in zip(rows, choices)],
                   "norms": [choice_norm(c, len(ids), length_norm) for c, ids in zip(candidates, choices)]}
        if example.get("label") is not None:
            feature["labels"] = example["choices"].index(example["label"])
        features.append(feature)
    if cut:
        warnings.warn(f"{cut} of {len(examples)} {split} prompts with a choice are longer than {max_length} tokens "
                      "(model.max_length) and lost the start of their context", stacklevel=2)
    return features


class ChoiceCollator:
    """Flattens a batch's choices into right-padded rows (as `PetCollator`, so soft prompts keep positions);
    ``choice_slots`` (B, C) holds each example's rows' indices, -1 where it has fewer choices. `width`: C at
    least (the most choices in the data), so the Trainer's dev predictions share one width."""

    def __init__(self, pad_id: int, width: int = 0):
        self.pad_id, self.width = pad_id, width

    def __call__(self, features: list[dict]) -> dict:
        rows = [row for f in features for row in f["input_ids"]]
        longest = max(len(row) for row in rows)
        width = max(self.width, max(len(f["input_ids"]) for f in features))
        slots, next_row = torch.full((len(features), width), -1), 0
        for b, f in enumerate(features):
            count = len(f["input_ids"])
            slots[b, :count] = torch.arange(next_row, next_row + count)
            next_row += count
        batch = {
            "input_ids": torch.tensor([row + [self.pad_id] * (longest - len(row)) for row in rows]),
            "attention_mask": torch.tensor([[1] * len(row) + [0] * (longest - len(row)) for row in rows]),
            "target_starts": torch.tensor([s for f in features for s in f["target_starts"]]),
            "target_ends": torch.tensor([len(row) for row in rows]),
            "norms": torch.tensor([n for f in features for n in f["norms"]], dtype=torch.float32),
            "choice_slots": slots,
        }
        if all("labels" in f for f in features):
            batch["labels"] = torch.tensor([f["labels"] for f in features])
        return batch


class ChoiceModel(torch.nn.Module):
    """Causal LM → (B, C) choice scores, and the cross-entropy over each example's choices."""

    def __init__(self, lm: torch.nn.Module):
        super().__init__()
        self.lm = lm

    def row_scores(self, input_ids, attention_mask, target_starts, target_ends, norms) -> torch.Tensor:
        """(R,) each row's normalised log-likelihood of its choice tokens."""
        span = int((target_ends - target_starts).max())
        offsets = torch.arange(span, device=input_ids.device)
        targets_at = target_starts[:, None] + offsets  # (R, S) positions of the choice's tokens
        inside = targets_at < target_ends[:, None]
        targets_at = torch.where(inside, targets_at, target_starts[:, None])
        predicted_at = targets_at - 1  # the logits at position p predict token p + 1
        # The vocabulary projection runs only on the positions that predict a choice token (shifted past the
        # virtual tokens prompt/P-tuning prepend): the full (R, T, V) logits of 6 choices × 100 tokens × 49k
        # words would be 118 MB per example.
        keep, which = torch.unique(predicted_at + virtual_tokens(self.lm), return_inverse=True)  # (K,), (R, S)
        logits = self.lm(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep).logits  # (R, K, V)
        rows = torch.arange(len(input_ids), device=input_ids.device)[:, None]
        log_probs = logits[rows, which].float().log_softmax(-1)  # (R, S, V)
        token_scores = log_probs.gather(-1, input_ids.gather(1, targets_at)[..., None])[..., 0]  # (R, S)
        return (token_scores * inside).sum(-1) / norms

    def forward(self, input_ids, attention_mask, target_starts, target_ends, norms, choice_slots, labels=None):
        per_row = self.row_scores(input_ids, attention_mask, target_starts, target_ends, norms)  # (R,)
        scores = per_row[choice_slots.clamp(min=0)].masked_fill(choice_slots < 0, PAD_SCORE)  # (B, C)
        out = {"logits": scores}
        if labels is not None:
            out["loss"] = torch.nn.functional.cross_entropy(scores, labels)
        return out
