"""Log-likelihood scoring of candidate continuations with a causal LM (batched, prefix-cached).

The score of candidate ``c`` for request ``r`` is

    logprob_sum = sum_{t in cont} log p(x_t | x_<t),   text = shared_prefix + r.context + c

Tokenisation follows lm-evaluation-harness (``HFLM._encode_pair``) so that numbers agree with it:
trailing whitespace of the context moves onto the continuation, ``ctx_ids = encode(ctx)``,
``cont_ids = encode(ctx + cont)[len(ctx_ids):]``, and the model reads ``ctx_ids + cont_ids``.
No special tokens are added, except a BOS when the tokenizer adds one by itself (Llama-style
tokenizers); an empty context becomes the single BOS (or EOS) token, as in lm-eval.

``naive_score`` is the reference: one full forward pass per (context, candidate).
``score_requests`` gives the same numbers (to float noise) with far fewer FLOPs:

1. contexts are sorted longest first and batched with right padding (order restored at the end);
2. one forward pass per context yields the first token of every candidate, so single-token
   verbalizers (" positive" / " negative") cost one pass per context in total;
3. the shared prefix (e.g. few-shot demonstrations) is run once and its KV cache is reused for
   every context whose tokens start with the prefix tokens (others fall back and are counted);
4. later tokens of multi-token candidates run over their context's KV cache, batched over
   candidates, instead of re-running the context for each candidate.

Right padding is used throughout because it keeps every sequence's tokens contiguous after the
cached prefix: the causal mask already hides the trailing pads from real tokens, and position ids
simply continue after the prefix. (Left padding would put pads *between* prefix and context.)
Shapes: B batch rows, T new tokens, K cached tokens, V vocab, h kv heads, d head dim.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from tunelab.batching import by_length

__all__ = ["CandidateScore", "ScoreRequest", "ScoringStats", "bos_to_add", "encode_candidates", "encode_text", "naive_score",
           "score_requests"]

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values, each (B, h, K, d)


@dataclass
class ScoreRequest:
    """One context and the candidate continuations to score after it."""

    context: str
    candidates: list[str]


@dataclass(frozen=True)
class CandidateScore:
    """Log-likelihood of one candidate: sum over its tokens, and how many tokens it has."""

    logprob_sum: float
    num_tokens: int

    @property
    def logprob_mean(self) -> float:
        """Length-normalised score (per token), as lm-eval's `acc_norm`-style comparisons need."""
        return self.logprob_sum / self.num_tokens


@dataclass
class ScoringStats:
    """What a scoring call cost; pass one in as ``stats=`` to accumulate over calls."""

    forward_passes: int = 0
    tokens_processed: int = 0  # real (non-pad) tokens fed to the model, prefix included
    padding_tokens: int = 0  # pad slots fed to the model (wasted compute)
    prefix_tokens: int = 0  # tokens of the shared prefix held in the KV cache
    prefix_cache_hits: int = 0  # requests that reused the shared-prefix cache
    prefix_cache_fallbacks: int = 0  # requests whose tokens did not start with the prefix tokens


@dataclass
class _Encoded:
    ctx_ids: list[int]  # never empty: an empty context is [BOS or EOS]
    cont_ids: list[list[int]] = field(default_factory=list)  # one list per candidate, never empty


# --------------------------------------------------------------------------- tokenisation


def encode_text(tokenizer, text: str) -> list[int]:
    # The only tokenizer call used: works alike for WordPiece (BERT), BPE (Llama/GPT-2) tokenizers.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def bos_to_add(tokenizer) -> list[int]:
    """``[bos_id]`` if the tokenizer prepends its BOS by itself (Llama-style), else ``[]``."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return []
    plain = encode_text(tokenizer, "a")
    special = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    return [bos] if special[:1] == [bos] and special[1 : 1 + len(plain)] == plain else []


def _empty_context_id(model, tokenizer) -> int:
    # lm-eval's `prefix_token_id`: BOS, else EOS; tokenizers without either (BERT) use the model's.
    for owner in (tokenizer,) if model is None else (tokenizer, model.config):
        for name in ("bos_token_id", "eos_token_id"):
            value = getattr(owner, name, None)
            if isinstance(value, list):  # some configs list several EOS ids
                value = value[0] if value else None
            if value is not None:
                return int(value)
    raise ValueError("cannot score an empty context: neither tokenizer nor model config has a BOS/EOS token")


def _encode_request(tokenizer, context: str, candidates: list[str], bos: list[int], empty_id: int) -> _Encoded:
    """lm-eval's `_encode_pair`, with the context encoded once for all candidates."""
    stripped = context.rstrip()
    moved = context[len(stripped) :]  # trailing whitespace belongs to the continuation
    if not stripped:
        conts = [encode_text(tokenizer, moved + c) for c in candidates]
        enc = _Encoded([empty_id], conts)
    else:
        ctx_ids = bos + encode_text(tokenizer, stripped)
        conts = [(bos + encode_text(tokenizer, stripped + moved + c))[len(ctx_ids) :] for c in candidates]
        enc = _Encoded(ctx_ids, conts)
    for cand, ids in zip(candidates, enc.cont_ids):
        if not ids:
            raise ValueError(f"candidate {cand!r} after context {context[-40:]!r} encodes to no tokens")
    return enc


def encode_candidates(tokenizer, context: str, candidates: list[str]) -> tuple[list[int], list[list[int]]]:
    """(context ids, each candidate's ids) split exactly as `score_requests` splits them, from the tokenizer alone:
    what a model trained to rank the candidates (`pet_choices`) must see to score like `zero_shot`."""
    empty_id = _empty_context_id(None, tokenizer) if not context.strip() else -1  # only an empty context needs it
    encoded = _encode_request(tokenizer, context, candidates, bos_to_add(tokenizer), empty_id)
    return encoded.ctx_ids, encoded.cont_ids


def _encode_all(model, tokenizer, requests: list[ScoreRequest], shared_prefix: str) -> list[_Encoded]:
    bos, empty_id = bos_to_add(tokenizer), _empty_context_id(model, tokenizer)
    return [_encode_request(tokenizer, shared_prefix + r.context, r.candidates, bos, empty_id) for r in requests]


# --------------------------------------------------------------------------- model plumbing


def _device_of(model, device) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


def _right_pad(rows: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows -> ids (B, T) and attention mask (B, T); pads use id 0 and are masked out."""
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


def _make_cache(model, kv: KV) -> DynamicCache:
    # A fresh cache object per forward pass: forward passes grow caches in place, so a shared one
    # would leak one batch's tokens into the next. DynamicLayer.update concatenates, which copies
    # `kv`, so the stored prefix tensors are never written to.
    return DynamicCache(ddp_cache_data=kv, config=model.config)


def _cache_tensors(cache) -> KV:
    return [(layer.keys, layer.values) for layer in cache.layers]


def cache_keyword(model) -> str:
    """The forward's name for the KV cache: transformers >= 5.24 calls it `cache` (`past_key_values`
    is deprecated there, removed in 5.40); earlier releases only know `past_key_values`.
    A PEFT wrapper forwards unknown keywords, so its base model's signature decides."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def returned_cache(out):
    """The cache a forward returned, under either release's field name."""
    return out["cache"] if "cache" in out.keys() else out.past_key_values


def _forward(model, ids, mask, positions, kv: KV | None, keep: torch.Tensor, stats: ScoringStats):
    """One pass over new tokens after an optional cache.

    ids, positions: (B, T); mask: (B, K + T), covering cached and new tokens; keep: (B, T) bool,
    the positions whose next-token distribution is needed. Returns log-probs (keep.sum(), V) in
    row-major order of `keep`, and the cache (K + T tokens) as tensors. The vocabulary projection
    runs only on the kept positions (transformers' 2-D boolean `logits_to_keep`), so no (B, T, V)
    tensor is ever built.
    """
    cache = _make_cache(model, kv) if kv is not None else DynamicCache(config=model.config)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        **{cache_keyword(model): cache},
        use_cache=True,
        logits_to_keep=keep,
    )
    logits = out.logits  # (N, V), N = keep.sum()
    if logits.dim() != 2 or logits.shape[0] != int(keep.sum()):
        raise TypeError(f"{type(model).__name__} does not support a boolean 2-D `logits_to_keep`")
    real = int(mask[:, -ids.shape[1] :].sum())
    stats.forward_passes += 1
    stats.tokens_processed += real
    stats.padding_tokens += ids.numel() - real
    return torch.log_softmax(logits.float(), dim=-1), _cache_tensors(returned_cache(out))


# --------------------------------------------------------------------------- fast path


def _run_prefix(model, prefix_ids: list[int], device, stats: ScoringStats) -> KV:
    ids = torch.tensor([prefix_ids], device=device)  # (1, K)
    keep = torch.zeros_like(ids, dtype=torch.bool)  # no logits needed, only the cache
    positions = torch.arange(len(prefix_ids), device=device)[None]  # (1, K)
    _, kv = _forward(model, ids, torch.ones_like(ids), positions, None, keep, stats)
    stats.prefix_tokens = len(prefix_ids)
    return kv  # per layer (1, h, K, d)


def _score_contexts(model, batch: list[_Encoded], prefix_kv: KV | None, k: int, device, stats):
    """Run the contexts (minus the cached prefix); return first-token log-probs and the context cache."""
    ids, new_mask = _right_pad([e.ctx_ids[k:] for e in batch], device)  # (B, T)
    b, t = ids.shape
    lengths = new_mask.sum(1)  # (B,)
    kv = None
    if prefix_kv is not None:  # views; _make_cache copies them into the batch's own cache
        kv = [(key.expand(b, -1, -1, -1), val.expand(b, -1, -1, -1)) for key, val in prefix_kv]
    mask = torch.cat([torch.ones(b, k, dtype=torch.long, device=device), new_mask], 1)  # (B, K + T)
    positions = k + torch.arange(t, device=device).expand(b, t)  # (B, T): continue after the prefix
    keep = torch.zeros(b, t, dtype=torch.bool, device=device)
    keep[torch.arange(b, device=device), lengths - 1] = True  # last context token predicts cont[0]
    logprobs, ctx_kv = _forward(model, ids, mask, positions, kv, keep, stats)  # (B, V), (B, h, K + T, d)
    firsts = [[float(logprobs[i, cont[0]]) for cont in e.cont_ids] for i, e in enumerate(batch)]
    return firsts, ctx_kv, mask, k + lengths


def _score_tails(model, pairs, batch, ctx_kv: KV, ctx_mask, ctx_end, device, stats) -> list[float]:
    """Tokens 2..n of candidates `pairs` = [(row in batch, candidate index)], over their context cache."""
    rows = torch.tensor([r for r, _ in pairs], device=device)
    conts = [batch[r].cont_ids[j] for r, j in pairs]
    ids, new_mask = _right_pad([c[:-1] for c in conts], device)  # (n, T); c[:-1] predicts c[1:]
    n, t = ids.shape
    kv = [(key.index_select(0, rows), val.index_select(0, rows)) for key, val in ctx_kv]  # (n, h, K + T_ctx, d)
    # The context rows keep their own right padding, so pads sit between context and candidate:
    # the mask hides them and position ids skip them, which is exactly the unpadded sequence.
    mask = torch.cat([ctx_mask.index_select(0, rows), new_mask], 1)  # (n, K + T_ctx + T)
    positions = ctx_end.index_select(0, rows)[:, None] + torch.arange(t, device=device)  # (n, T)
    logprobs, _ = _forward(model, ids, mask, positions, kv, new_mask.bool(), stats)  # (sum(len-1), V)
    targets = torch.tensor([tok for c in conts for tok in c[1:]], device=device)
    picked = logprobs.gather(1, targets[:, None])[:, 0]  # (sum(len-1),)
    return [float(s.sum()) for s in picked.split([len(c) - 1 for c in conts])]


def _score_batch(model, batch: list[_Encoded], prefix_kv, k: int, batch_size: int, device, stats):
    firsts, ctx_kv, ctx_mask, ctx_end = _score_contexts(model, batch, prefix_kv, k, device, stats)
    totals = [list(row) for row in firsts]
    pairs = [(r, j) for r, e in enumerate(batch) for j, c in enumerate(e.cont_ids) if len(c) > 1]
    pairs.sort(key=lambda p: len(batch[p[0]].cont_ids[p[1]]), reverse=True)  # less padding per chunk
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        tails = _score_tails(model, chunk, batch, ctx_kv, ctx_mask, ctx_end, device, stats)
        for (r, j), tail in zip(chunk, tails):
            totals[r][j] += tail
    return [[CandidateScore(s, len(c)) for s, c in zip(row, e.cont_ids)] for row, e in zip(totals, batch)]


def _score_group(model, encoded, indices, prefix_kv, k, batch_size, device, stats, results) -> None:
    rows = by_length([encoded[i] for i in indices], lambda e: len(e.ctx_ids), batch_size,
                     lambda chunk: _score_batch(model, chunk, prefix_kv, k, batch_size, device, stats))
    for i, row in zip(indices, rows):
        results[i] = row  # back to the caller's order


def _starts_with(ctx_ids: list[int], cached: list[int]) -> bool:
    # Strictly longer: the context's last token must be a new token, its logits give cont[0].
    return len(ctx_ids) > len(cached) and ctx_ids[: len(cached)] == cached


def score_requests(
    model,
    tokenizer,
    requests: list[ScoreRequest],
    *,
    shared_prefix: str = "",
    batch_size: int = 16,
    device=None,
    stats: ScoringStats | None = None,
) -> list[list[CandidateScore]]:
    """Score every candidate of every request; ``result[r][c]`` belongs to ``requests[r].candidates[c]``.

    ``shared_prefix`` is prepended to every context and, when its tokens are the first tokens of a
    request, run only once. ``batch_size`` bounds rows per forward pass (contexts, and candidate
    tails). ``device`` is where the model lives (default: its parameters' device). The model is put
    in eval mode during the call (dropout would break agreement with naive scoring) and restored.
    """
    stats = stats if stats is not None else ScoringStats()
    device = _device_of(model, device)
    encoded = _encode_all(model, tokenizer, requests, shared_prefix)
    results: list[list[CandidateScore]] = [[] for _ in requests]
    todo = [i for i, r in enumerate(requests) if r.candidates]
    prefix_ids = (bos_to_add(tokenizer) + encode_text(tokenizer, shared_prefix)) if shared_prefix else []
    # Cache all prefix tokens but the last: every request then has >= 1 new token even when its
    # context adds nothing after the prefix, and only the first K tokens must align.
    k = max(len(prefix_ids) - 1, 0)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            hits = [i for i in todo if k and _starts_with(encoded[i].ctx_ids, prefix_ids[:k])]
            hit_set = set(hits)
            misses = [i for i in todo if i not in hit_set]
            if hits:
                prefix_kv = _run_prefix(model, prefix_ids[:k], device, stats)
                stats.prefix_cache_hits += len(hits)
                _score_group(model, encoded, hits, prefix_kv, k, batch_size, device, stats, results)
            stats.prefix_cache_fallbacks += len(misses) if k else 0
            _score_group(model, encoded, misses, None, 0, batch_size, device, stats, results)
    finally:
        model.train(was_training)
    return results


# --------------------------------------------------------------------------- reference


def naive_score(
    model,
    tokenizer,
    requests: list[ScoreRequest],
    shared_prefix: str = "",
    *,
    device=None,
    stats: ScoringStats | None = None,
) -> list[list[CandidateScore]]:
    """Reference scorer: one full, uncached forward pass per (context, candidate), full logits."""
    stats = stats if stats is not None else ScoringStats()
    device = _device_of(model, device)
    encoded = _encode_all(model, tokenizer, requests, shared_prefix)
    was_training = model.training
    model.eval()
    results = []
    try:
        with torch.inference_mode():
            for enc in encoded:
                row = []
                for cont in enc.cont_ids:
                    ids = torch.tensor([(enc.ctx_ids + cont)[:-1]], device=device)  # (1, T)
                    logits = model(input_ids=ids).logits[0]  # (T, V)
                    logprobs = torch.log_softmax(logits[len(enc.ctx_ids) - 1 :].float(), dim=-1)  # (n, V)
                    picked = logprobs.gather(1, torch.tensor(cont, device=device)[:, None])  # (n, 1)
                    row.append(CandidateScore(float(picked.sum()), len(cont)))
                    stats.forward_passes += 1
                    stats.tokens_processed += ids.shape[1]
                results.append(row)
    finally:
        model.train(was_training)
    return results
