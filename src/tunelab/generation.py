"""Causal-LM generation (prompt → continuation) and supervised fine-tuning on prompt → answer pairs.

Generation: prompts are tokenised like the scoring engine reads them (no special tokens except a
BOS the tokenizer would add by itself, so chat-template text with its own special tokens is
safe), sorted by length, left-padded into batches (so every row's next token sits at the same
column) and passed to `model.generate`, which builds position ids from the attention mask: a row
gets the same tokens batched or alone. Decoding is greedy, or sampling with temperature / top-p
(/ top-k) under a seed that forks the RNG (the caller's random state is left untouched).
Generation stops at EOS, at `max_new_tokens`, or once every row has produced a stop string; the
returned continuation is cut before the first stop string.

SFT: a training example is ``prompt_ids + answer_ids + [EOS]`` where ``prompt_ids`` are exactly
the ids generation starts from, and the labels are -100 on prompt tokens and padding, so the loss
is the mean cross-entropy over answer tokens only::

    loss = - (1 / |A|) Σ_{t ∈ A} log p(x_t | x_<t),   A = answer (and EOS) positions in the batch

Batches are left-padded too, so every answer ends at the last column and the vocabulary
projection runs on the last ``max answer length + 1`` columns only (`logits_to_keep`), not on the
whole (B, T, V) tensor.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from pydantic import Field

from tunelab.batching import by_length
from tunelab.scoring import bos_to_add, encode_text
from tunelab.settings import StrictSettings

IGNORE = -100  # label id the loss skips (prompt tokens, padding)


class GenerationOptions(StrictSettings):
    """How continuations are decoded (the `generation:` settings of generating strategies)."""

    max_new_tokens: int = Field(64, gt=0)
    """Stop after this many new tokens."""
    do_sample: bool = False
    """false: greedy decoding (deterministic); true: sample with temperature / top_p / top_k."""
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p."""
    top_k: int = Field(0, ge=0)
    """Keep only the k most likely tokens when sampling; 0 turns it off."""
    stop: list[str] = []
    """Stop strings: a row ends once it produced one after some non-space text; the text is cut before it."""
    seed: int | None = None
    """Seed of the sampler; default: the experiment's train.seed."""
    batch_size: int = Field(8, gt=0)

    def reads_train_seed(self, sampled: bool = False) -> bool:
        """Whether the experiment's seed changes the text: only when sampling without a seed of its own."""
        return (self.do_sample or sampled) and self.seed is None


# ---------------------------------------------------------------------------------------------
# Tokenisation


def encode_prompt(tokenizer, text: str) -> list[int]:
    """The ids a continuation is generated after (and SFT trains after): BOS if native + text."""
    return bos_to_add(tokenizer) + encode_text(tokenizer, text)


def cut_at_stop(text: str, stops: list[str] | tuple[str, ...]) -> str:
    """`text` up to (not including) the earliest stop string after its first non-space character.

    Stops inside leading whitespace do not count, so a continuation that opens with a blank line
    (a model's habit after "Let's think step by step.") is not cut to nothing.
    """
    start = len(text) - len(text.lstrip())
    cut = min((i for i in (text.find(s, start) for s in stops if s) if i >= 0), default=len(text))
    return text[:cut]


def _left_pad(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows -> ids (B, T) and attention mask (B, T), padded on the left."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def pad_id_of(tokenizer, model) -> int:
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id, getattr(model.config, "pad_token_id", None)):
        if value is not None:
            return int(value)
    return 0


def eos_ids(tokenizer, model) -> list[int]:
    ids = {tokenizer.eos_token_id}
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(config_eos if isinstance(config_eos, list) else [config_eos])
    return sorted(i for i in ids if i is not None)


# ---------------------------------------------------------------------------------------------
# Generation


def _stop_criterion(tokenizer, start: int, stops: list[str]):
    from transformers import StoppingCriteria

    class StopStrings(StoppingCriteria):
        """Per row: done once its decoded continuation (columns after `start`) holds a stop string."""

        def __call__(self, input_ids, scores, **kwargs):  # input_ids: (B, start + new)
            texts = tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
            return torch.tensor([cut_at_stop(t, stops) != t for t in texts], device=input_ids.device)

    return StopStrings()


def _generate_batch(model, tokenizer, rows: list[list[int]], options: GenerationOptions, samples: int) -> list[str]:
    device = next(model.parameters()).device
    pad = pad_id_of(tokenizer, model)
    ids, mask = _left_pad(rows, pad, device)  # (B, T)
    kwargs = dict(max_new_tokens=options.max_new_tokens, pad_token_id=pad, eos_token_id=eos_ids(tokenizer, model) or None,
                  num_return_sequences=samples, do_sample=options.do_sample)
    if options.do_sample:
        kwargs.update(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k)
    else:  # explicit, so a model's generation_config cannot switch sampling on behind our back
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if options.stop:
        from transformers import StoppingCriteriaList

        kwargs["stopping_criteria"] = StoppingCriteriaList([_stop_criterion(tokenizer, ids.shape[1], options.stop)])
    out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)  # (B * samples, T + new)
    texts = tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
    return [cut_at_stop(text, options.stop) for text in texts]


def generate(
    model,
    tokenizer,
    prompts: list[str],
    options: GenerationOptions | None = None,
    *,
    samples: int = 1,
    max_prompt_tokens: int | None = None,
) -> list[list[str]]:
    """`samples` continuations per prompt: ``result[i][j]`` is prompt i's j-th continuation.

    Prompts longer than `max_prompt_tokens` keep their last tokens (where the answer cue is), with
    one warning saying how many were cut. The model is put in eval mode during the call.
    """
    options = options or GenerationOptions()
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    if max_prompt_tokens is not None:
        long = sum(len(e) > max_prompt_tokens for e in encoded)
        if long:
            warnings.warn(f"{long} of {len(prompts)} prompts are longer than {max_prompt_tokens} tokens; "
                          "their beginning was cut (raise model.max_length to keep it)", stacklevel=2)
            encoded = [e[-max_prompt_tokens:] for e in encoded]

    def run(chunk: list[list[int]]) -> list[list[str]]:
        texts = _generate_batch(model, tokenizer, chunk, options, samples)
        return [texts[n * samples : (n + 1) * samples] for n in range(len(chunk))]

    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            if options.seed is not None:
                torch.manual_seed(options.seed)
            return by_length(encoded, len, options.batch_size, run)  # similar lengths batch together
    finally:
        model.train(was_training)


def generate_text(model, tokenizer, prompts: list[str], options: GenerationOptions | None = None, **kwargs) -> list[str]:
    """One continuation per prompt (greedy by default)."""
    return [row[0] for row in generate(model, tokenizer, prompts, options, **kwargs)]


# ---------------------------------------------------------------------------------------------
# Supervised fine-tuning: loss on answer tokens only


def encode_sft(tokenizer, prompt: str, answer: str, max_length: int, eos_id: int | None) -> dict:
    """{input_ids, attention_mask, labels}: labels copy the answer (+ EOS) ids, -100 on the prompt.

    Too long: the prompt loses its beginning first (the answer and the cue before it are kept),
    then the answer its end.
    """
    prompt_ids = encode_prompt(tokenizer, prompt)
    answer_ids = encode_text(tokenizer, answer) + ([eos_id] if eos_id is not None else [])
    answer_ids = answer_ids[: max(max_length - 1, 1)]
    prompt_ids = prompt_ids[len(prompt_ids) - min(len(prompt_ids), max_length - len(answer_ids)) :]
    ids = prompt_ids + answer_ids
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [IGNORE] * len(prompt_ids) + answer_ids}


class SftCollator:
    """Left-pads input_ids (pad id), attention_mask (0) and labels (-100) into (B, T) tensors."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        width = max(len(f["input_ids"]) for f in features)
        batch = {"input_ids": [], "attention_mask": [], "labels": []}
        for f in features:
            gap = width - len(f["input_ids"])
            batch["input_ids"].append([self.pad_id] * gap + list(f["input_ids"]))
            batch["attention_mask"].append([0] * gap + list(f["attention_mask"]))
            batch["labels"].append([IGNORE] * gap + list(f["labels"]))
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}


class AnswerLoss(torch.nn.Module):
    """Wraps a causal LM for `train_model`: loss on answer tokens only.

    forward returns {"loss", "logits"} where logits (B, 1) is each example's mean answer-token
    log-probability, so dev evaluation ranks checkpoints without generating (`answer_logprob`).
    Needs left-padded batches (`SftCollator`): answers then end at the last column.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, labels):
        positions = (attention_mask.cumsum(-1) - 1).clamp_min(0)  # left pads must not shift real tokens
        width = input_ids.shape[1]
        answer_cols = labels.ne(IGNORE).any(0).nonzero()
        start = max(int(answer_cols.min()) - 1, 0) if len(answer_cols) else width - 1  # first predicting column
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                            logits_to_keep=width - start).logits[:, -(width - start) : -1]  # (B, W, V), W = width - start - 1
        targets = labels[:, start + 1 :]  # (B, W): column c's logits predict column c + 1
        mask = targets.ne(IGNORE)
        logprobs = torch.log_softmax(logits.float(), -1).gather(-1, targets.clamp_min(0)[..., None])[..., 0]
        logprobs = logprobs * mask  # (B, W)
        loss = -logprobs.sum() / mask.sum().clamp_min(1)
        per_example = logprobs.sum(1) / mask.sum(1).clamp_min(1)  # (B,)
        return {"loss": loss, "logits": per_example.detach()[:, None]}


def train_sft(model, tokenizer, train_pairs: list[tuple[str, str]], dev_pairs: list[tuple[str, str]],
              cfg, max_length: int, out_dir: Path):
    """Fine-tune `model` in place on (prompt, answer) pairs; the best dev epoch by mean answer
    log-probability is restored. Answers end with EOS, so the model learns where to stop.
    Returns train.TrainStats."""
    from tunelab.train import train_model

    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else (eos_ids(tokenizer, model) or [None])[0]
    encode = lambda pairs: [encode_sft(tokenizer, p, a, max_length, eos) for p, a in pairs]  # noqa: E731
    score = lambda logits, labels: {"answer_logprob": float(logits.mean())}  # noqa: E731
    return train_model(AnswerLoss(model), tokenizer, encode(train_pairs), encode(dev_pairs), cfg, out_dir,
                       score_dev=score, metric_for_best="answer_logprob", collator=SftCollator(pad_id_of(tokenizer, model)))
