"""The pieces of `pet` that touch tensors: feature encoding, the collator, the loss module.

A feature is one rendered prompt: ``input_ids``, ``attention_mask``, ``answer_pos`` (the position
whose logits hold the answer: the last token for causal LMs, the mask for masked LMs),
``word_ids`` (W,) the first token of every label word in verbalizer order, and ``labels`` (the
gold label's index) when the example has one. Causal-LM prompts are tokenised as the scoring
engine does (lm-eval style: trailing whitespace moves onto the word), so a word's first token is
exactly the token `zero_shot` scores first.
"""

from __future__ import annotations

import warnings

import torch

from tunelab.data.loaders import SOURCE_KEY
from tunelab.errors import ConfigError, DataError
from tunelab.prompts.engine import with_delimiter
from tunelab.scoring import bos_to_add, encode_text


def mask_token_of(tokenizer, causal: bool) -> str | None:
    """The text a masked-LM template puts at the answer (`{{ mask }}`); None for causal LMs."""
    if causal:
        return None
    if tokenizer.mask_token is None:
        raise ConfigError("this masked LM's tokenizer has no mask token; pet cannot mark the answer position")
    return tokenizer.mask_token


def label_word_ids(tokenizer, context: str, words: list[str], causal: bool) -> tuple[list[int], list[int]]:
    """(context ids, first token id of each word). Causal: lm-eval's `_encode_pair` split."""
    if not causal:
        ids = list(tokenizer(context, add_special_tokens=True)["input_ids"])
        firsts = [(encode_text(tokenizer, " " + w.strip()) or encode_text(tokenizer, w.strip()))[0] for w in words]
        return ids, firsts
    bos = bos_to_add(tokenizer)
    stripped = context.rstrip()
    moved = context[len(stripped) :]
    ctx_ids = bos + encode_text(tokenizer, stripped)
    firsts = []
    for word in words:
        continuation = (bos + encode_text(tokenizer, stripped + moved + word))[len(ctx_ids) :]
        if not continuation:
            raise ConfigError(f"label word {word!r} encodes to no token after the prompt")
        firsts.append(continuation[0])
    return ctx_ids, firsts


def check_distinct(word_ids: list[int], words: list[str], owners: list[str], verbalizer_at: str, example: str) -> None:
    """Words of different labels must start with different tokens (only the first token is scored). The fix is
    in the verbalizer (`verbalizer_at`: 'file, line N: '); `example` names the prompt the clash showed in."""
    seen: dict[int, int] = {}
    for i, token in enumerate(word_ids):
        j = seen.setdefault(token, i)
        if owners[j] != owners[i]:
            raise ConfigError(f"{verbalizer_at}label words {words[j]!r} ({owners[j]}) and {words[i]!r} ({owners[i]}) start "
                              f"with the same token after the prompt (of {example}); pet scores each word's first "
                              "token, so choose words that differ there, or use strategy pet_choices, which scores "
                              "every token of one word per label")


def truncate(ids: list[int], answer_pos: int, max_length: int, causal: bool) -> tuple[list[int], int]:
    """Causal: keep the last tokens (the cue before the answer). Masked: keep the window holding the mask."""
    if len(ids) <= max_length:
        return ids, answer_pos
    if causal:
        return ids[-max_length:], max_length - 1
    if answer_pos < max_length - 1:
        return ids[: max_length - 1] + ids[-1:], answer_pos  # keep the closing special token
    cut = len(ids) - max_length + 1
    return ids[:1] + ids[cut + 1 :], answer_pos - cut


def encode_examples(tokenizer, texts: list[tuple[str, str]], examples: list[dict], plan, causal: bool,
                    max_length: int, split: str, label_names: list[str], verbalizer_at: str = "") -> list[dict]:
    """One feature per (prefix, query) rendering; see the module docstring. `verbalizer_at` ('file, line N: ')
    says where the label words were set, for the error when two labels' words cannot be told apart."""
    words = [w for label in plan.labels for w in plan.verbalizer[label]]
    owners = [label for label in plan.labels for _ in plan.verbalizer[label]]
    label_index = {name: i for i, name in enumerate(label_names)}
    mask_id = None if causal else tokenizer.mask_token_id
    features, cut = [], 0
    for (prefix, query), example in zip(texts, examples):
        where = example.get(SOURCE_KEY, f"a {split} example")
        ids, firsts = label_word_ids(tokenizer, prefix + query, [with_delimiter(query, w) for w in words], causal)
        check_distinct(firsts, words, owners, verbalizer_at, where)
        if causal:
            answer_pos = len(ids) - 1
        else:
            found = [i for i, t in enumerate(ids) if t == mask_id]
            if len(found) != 1:
                raise DataError(f"{where}: the rendered prompt holds {len(found)} mask tokens; pet needs exactly one "
                                "(check prompt.template and whether the text itself contains the mask token)")
            answer_pos = found[0]
        cut += len(ids) > max_length
        ids, answer_pos = truncate(ids, answer_pos, max_length, causal)
        feature = {"input_ids": ids, "attention_mask": [1] * len(ids), "answer_pos": answer_pos, "word_ids": firsts}
        if example.get("label") is not None:
            feature["labels"] = label_index[example["label"]]
        features.append(feature)
    if cut:
        warnings.warn(f"{cut} of {len(examples)} {split} prompts are longer than {max_length} tokens (model.max_length) "
                      "and were cut, keeping the answer position", stacklevel=2)
    return features


class PetCollator:
    """Right-pads features into tensors. Right padding keeps each row's positions as if it were alone,
    also after the virtual tokens soft-prompt methods prepend (left pads would sit between them)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        width = max(len(f["input_ids"]) for f in features)
        gaps = [width - len(f["input_ids"]) for f in features]
        batch = {
            "input_ids": torch.tensor([list(f["input_ids"]) + [self.pad_id] * g for f, g in zip(features, gaps)]),
            "attention_mask": torch.tensor([list(f["attention_mask"]) + [0] * g for f, g in zip(features, gaps)]),
            "answer_pos": torch.tensor([f["answer_pos"] for f in features]),
            "word_ids": torch.tensor([f["word_ids"] for f in features]),
        }
        if all("labels" in f for f in features):
            batch["labels"] = torch.tensor([f["labels"] for f in features])
        return batch


class PetModel(torch.nn.Module):
    """LM → (B, L) label logits at the answer position, and PET's cross-entropy over the labels."""

    def __init__(self, lm: torch.nn.Module, *, causal: bool, words_per_label: list[int], aggregation: str = "max"):
        super().__init__()
        self.lm, self.causal, self.aggregation = lm, causal, aggregation
        bounds = torch.tensor([0] + words_per_label).cumsum(0).tolist()
        self.groups = [list(range(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]

    def answer_logits(self, input_ids, attention_mask, answer_pos) -> torch.Tensor:
        """(B, V) logits where the label word goes."""
        rows = torch.arange(len(input_ids), device=input_ids.device)
        if not self.causal:
            logits = self.lm(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, T, V)
            return logits[rows, answer_pos]
        # The vocabulary projection runs only on the answer columns (a 1-D `logits_to_keep`), shifted
        # past the virtual tokens that prompt/P-tuning prepend to the sequence.
        keep, which = torch.unique(answer_pos + virtual_tokens(self.lm), return_inverse=True)  # (K,), (B,)
        logits = self.lm(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep).logits  # (B, K, V)
        return logits[rows, which]

    def forward(self, input_ids, attention_mask, answer_pos, word_ids, labels=None):
        z = self.answer_logits(input_ids, attention_mask, answer_pos).float()  # (B, V)
        per_word = z.gather(1, word_ids)  # (B, W)
        reduce = {"max": lambda s: s.max(-1).values, "mean": lambda s: s.mean(-1),
                  "logsumexp": lambda s: torch.logsumexp(s, -1)}[self.aggregation]
        per_label = torch.stack([reduce(per_word[:, g]) for g in self.groups], dim=-1)  # (B, L)
        out = {"logits": per_label}
        if labels is not None:
            out["loss"] = torch.nn.functional.cross_entropy(per_label, labels)
        return out


def virtual_tokens(lm) -> int:
    """Positions PEFT prepends to the sequence (prompt tuning, P-tuning); prefix tuning adds none (KV only)."""
    config = getattr(lm, "active_peft_config", None)
    if not getattr(config, "is_prompt_learning", False) or str(config.peft_type).endswith("PREFIX_TUNING"):
        return 0
    return int(config.num_virtual_tokens)
