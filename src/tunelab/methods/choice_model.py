"""The pieces of `pet_choices` that touch tensors: feature encoding, the collators, the loss modules.

A feature is one multiple-choice example: ``input_ids`` (the prompt's tokens), ``choice_ids`` (each choice's
tokens after it, split as `zero_shot` splits them, `tunelab.scoring.encode_candidates`), ``norms`` (per choice,
what its summed log-likelihood is divided by: 1, its token count or its character count, `length_norm`) and
``labels`` (the gold choice's index) when the example has one. Every choice of a batch is scored at once::

    s[b, c] = Σ_t log p(choice_c,t | prompt_b, choice_c,<t) / norm[b, c]      (B, C)  C: the most choices
    loss    = cross-entropy(softmax over the example's own choices, gold choice)

Two ways to compute s, equal up to float rounding (a test checks scores and gradients):

- `SharedPromptChoiceModel`: the prompt runs once; its KV cache is copied to each choice, which runs only its own
  tokens (as `tunelab.scoring` does at inference, here with gradients through the cache). A question of 150
  tokens with six 8-token choices costs ~200 tokens instead of ~950.
- `ChoiceModel`: one row per choice, prompt + choice. Soft prompts (prompt tuning, P-tuning, prefix tuning)
  prepend virtual tokens or a cache of their own on every forward pass, so they take this one.

Missing choices (an example with fewer than C) score PAD_SCORE, which no softmax gives weight.
"""

from __future__ import annotations

import warnings

import torch

from tunelab.methods.pet_model import virtual_tokens
from tunelab.scoring import cache_keyword, encode_candidates, returned_cache

PAD_SCORE = -1.0e9
"""The score of a choice slot an example does not have: exp(PAD_SCORE - any real score) is 0."""


def choice_norm(choice: str, token_count: int, how: str) -> float:
    """`none`: the sum as it is; `token`: per token; `char`: per character (as `prompts.engine.normalised`)."""
    return {"none": 1.0, "token": float(token_count), "char": float(max(len(choice), 1))}[how]


def encode_choices(tokenizer, texts: list[tuple[str, str]], examples: list[dict], length_norm: str,
                   max_length: int, split: str) -> list[dict]:
    """One feature per (prefix, query) rendering and its example's `choices` (see the module docstring). A prompt
    too long for its longest choice loses its start (the question's end and the answer cue stay)."""
    from tunelab.prompts.engine import with_delimiter

    features, cut = [], 0
    for (prefix, query), example in zip(texts, examples):
        candidates = [with_delimiter(query, choice) for choice in example["choices"]]
        context, choices = encode_candidates(tokenizer, prefix + query, candidates)
        room = max(max_length - max(len(ids) for ids in choices), 1)
        cut += len(context) > room
        feature = {"input_ids": context[-room:], "choice_ids": choices,
                   "norms": [choice_norm(c, len(ids), length_norm) for c, ids in zip(candidates, choices)]}
        if example.get("label") is not None:
            feature["labels"] = example["choices"].index(example["label"])
        features.append(feature)
    if cut:
        warnings.warn(f"{cut} of {len(examples)} {split} prompts with a choice are longer than {max_length} tokens "
                      "(model.max_length) and lost the start of their context", stacklevel=2)
    return features


def right_padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask), both (N, longest); at least one column so an all-empty batch still has a shape."""
    width = max([len(row) for row in rows] + [1])
    ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    return ids, mask


def slot_rows(features: list[dict], width: int) -> torch.Tensor:
    """(B, C): each example's choice rows in the flattened batch, -1 where it has fewer choices."""
    width = max([width] + [len(f["choice_ids"]) for f in features])
    slots, next_row = torch.full((len(features), width), -1), 0
    for b, f in enumerate(features):
        count = len(f["choice_ids"])
        slots[b, :count] = torch.arange(next_row, next_row + count)
        next_row += count
    return slots


class ChoiceCollator:
    """Tensors for `SharedPromptChoiceModel` (`shared_prompt`) or `ChoiceModel` (a row per choice). Rows are right
    padded, as `PetCollator`'s, so soft prompts keep their positions. `width`: C at least (the most choices in the
    data), so the Trainer's dev predictions share one width."""

    def __init__(self, pad_id: int, width: int = 0, shared_prompt: bool = True):
        self.pad_id, self.width, self.shared_prompt = pad_id, width, shared_prompt

    def __call__(self, features: list[dict]) -> dict:
        batch = self.shared(features) if self.shared_prompt else self.rows(features)
        batch["norms"] = torch.tensor([n for f in features for n in f["norms"]], dtype=torch.float32)
        batch["choice_slots"] = slot_rows(features, self.width)
        if all("labels" in f for f in features):
            batch["labels"] = torch.tensor([f["labels"] for f in features])
        return batch

    def shared(self, features: list[dict]) -> dict:
        choices = [ids for f in features for ids in f["choice_ids"]]
        prompts, prompt_mask = right_padded([list(f["input_ids"]) for f in features], self.pad_id)
        tails, tail_mask = right_padded([ids[:-1] for ids in choices], self.pad_id)  # token t predicts t + 1
        targets, _ = right_padded([ids[1:] for ids in choices], self.pad_id)
        return {"input_ids": prompts, "attention_mask": prompt_mask, "tail_ids": tails, "tail_mask": tail_mask,
                "tail_targets": targets, "first_tokens": torch.tensor([ids[0] for ids in choices]),
                "owners": torch.tensor([b for b, f in enumerate(features) for _ in f["choice_ids"]])}

    def rows(self, features: list[dict]) -> dict:
        rows = [list(f["input_ids"]) + ids for f in features for ids in f["choice_ids"]]
        ids, mask = right_padded(rows, self.pad_id)
        return {"input_ids": ids, "attention_mask": mask,
                "target_starts": torch.tensor([len(f["input_ids"]) for f in features for _ in f["choice_ids"]]),
                "target_ends": torch.tensor([len(row) for row in rows])}


def choice_outputs(per_row: torch.Tensor, norms, slots, labels) -> dict:
    """(R,) summed log-likelihoods → {"logits": (B, C) normalised scores, "loss": cross-entropy with labels}."""
    per_row = per_row / norms
    scores = per_row[slots.clamp(min=0)].masked_fill(slots < 0, PAD_SCORE)  # (B, C)
    out = {"logits": scores}
    if labels is not None:
        out["loss"] = torch.nn.functional.cross_entropy(scores, labels)
    return out


class SharedPromptChoiceModel(torch.nn.Module):
    """Causal LM → (B, C) choice scores: each prompt runs once, each choice over a copy of its prompt's cache."""

    def __init__(self, lm: torch.nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask, tail_ids, tail_mask, tail_targets, first_tokens, owners, norms,
                choice_slots, labels=None):
        b, t = input_ids.shape
        ends = attention_mask.sum(1)  # (B,) prompt lengths
        last = torch.zeros_like(attention_mask, dtype=torch.bool)
        last[torch.arange(b), ends - 1] = True  # the prompt's last token predicts each choice's first
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=True, logits_to_keep=last)
        first = out.logits.float().log_softmax(-1)[owners, first_tokens]  # (R,)
        if not bool(tail_mask.any()):  # every choice is one token
            return choice_outputs(first, norms, choice_slots, labels)
        from transformers import DynamicCache

        # The cache copied per choice: index_select keeps the graph, so the prompt learns from every choice.
        kv = [(layer.keys.index_select(0, owners), layer.values.index_select(0, owners))
              for layer in returned_cache(out).layers]
        cache = DynamicCache(ddp_cache_data=kv, config=self.lm.config)
        # Prompts keep their own right padding: the mask hides the pads between prompt and choice, and position
        # ids skip them — exactly the unpadded sequence (as tunelab.scoring's tails).
        mask = torch.cat([attention_mask.index_select(0, owners), tail_mask], 1)
        positions = ends.index_select(0, owners)[:, None] + torch.arange(tail_ids.shape[1], device=tail_ids.device)
        keep = tail_mask.bool()
        tails = self.lm(input_ids=tail_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                        logits_to_keep=keep, **{cache_keyword(self.lm): cache})
        picked = tails.logits.float().log_softmax(-1).gather(1, tail_targets[keep][:, None])[:, 0]  # (kept,)
        rest = torch.zeros_like(first).index_add(0, keep.nonzero()[:, 0], picked)  # (R,) tokens 2..n
        return choice_outputs(first + rest, norms, choice_slots, labels)


class ChoiceModel(torch.nn.Module):
    """Causal LM → (B, C) choice scores, one row per choice (prompt + choice): for soft prompts."""

    def __init__(self, lm: torch.nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask, target_starts, target_ends, norms, choice_slots, labels=None):
        span = int((target_ends - target_starts).max())
        offsets = torch.arange(span, device=input_ids.device)
        targets_at = target_starts[:, None] + offsets  # (R, S) positions of the choice's tokens
        inside = targets_at < target_ends[:, None]
        targets_at = torch.where(inside, targets_at, target_starts[:, None])
        # The vocabulary projection runs only where a choice token is predicted (position p predicts p + 1),
        # shifted past the virtual tokens prompt/P-tuning prepend.
        keep, which = torch.unique(targets_at - 1 + virtual_tokens(self.lm), return_inverse=True)  # (K,), (R, S)
        logits = self.lm(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep).logits  # (R, K, V)
        rows = torch.arange(len(input_ids), device=input_ids.device)[:, None]
        log_probs = logits[rows, which].float().log_softmax(-1)  # (R, S, V)
        token_scores = log_probs.gather(-1, input_ids.gather(1, targets_at)[..., None])[..., 0]  # (R, S)
        return choice_outputs((token_scores * inside).sum(-1), norms, choice_slots, labels)
