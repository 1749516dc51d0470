"""The fast scoring engine must agree with one-pass-per-candidate naive scoring, and be cheaper."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from conftest import tiny_llama_config
from tunelab.scoring import CandidateScore, ScoreRequest, ScoringStats, naive_score, score_requests

TOL = 1e-4
PREFIX = "Review: a fine film.\nSentiment: positive\n\nReview: dull and long.\nSentiment: negative\n\n"

SINGLE = [  # every candidate is one WordPiece token; contexts of different lengths
    ScoreRequest("Review: good.\nSentiment:", [" positive", " negative"]),
    ScoreRequest(
        "Review: the plot wanders, the acting is wooden and the ending drags on.\nSentiment:", [" positive", " negative"]
    ),
    ScoreRequest("Review: great fun\nSentiment: ", ["positive", "negative"]),  # trailing space moves
    ScoreRequest("Review: meh, I guess it was fine on a rainy day.\nSentiment:", [" positive", " negative"]),
    ScoreRequest("Review: awful\nSentiment:", [" positive", " negative"]),
]
MULTI = [  # candidates of 1 to several tokens, contexts of different lengths
    ScoreRequest("Question: what colour is the sky?\nAnswer:", [" blue", " a pale shade of grey", " green"]),
    ScoreRequest("Q: capital of France?\nA:", [" Paris", " the city of Lyon", " unbelievable"]),
    ScoreRequest("Translate to French: the cat sleeps on the warm mat.\nFrench:", [" le chat dort", " chat"]),
    ScoreRequest("2 + 2 =", [" 4", " four", " twenty two"]),
]


@pytest.fixture
def sharp_llama_lm():
    """Tiny Llama with larger weights: peaky distributions, so argmax differences are meaningful."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(1)
    return LlamaForCausalLM(tiny_llama_config(initializer_range=0.3)).eval()


@pytest.fixture
def bos_tokenizer(bert_tokenizer):
    """The MiniLM tokenizer turned Llama-style: [CLS] is its BOS and is prepended by itself."""
    from tokenizers.processors import TemplateProcessing

    tok = copy.deepcopy(bert_tokenizer)
    tok.bos_token = "[CLS]"
    cls_id = tok.convert_tokens_to_ids("[CLS]")
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="[CLS] $A", pair="[CLS] $A $B", special_tokens=[("[CLS]", cls_id)]
    )
    assert tok("hi")["input_ids"][0] == cls_id
    return tok


def assert_agree(fast, naive):
    assert [len(r) for r in fast] == [len(r) for r in naive]
    for frow, nrow in zip(fast, naive):
        assert [c.num_tokens for c in frow] == [c.num_tokens for c in nrow]
        diffs = [abs(f.logprob_sum - n.logprob_sum) for f, n in zip(frow, nrow)]
        assert max(diffs, default=0.0) < TOL, diffs
        if frow:
            argmax = lambda row: max(range(len(row)), key=lambda i: row[i].logprob_sum)  # noqa: E731
            assert argmax(frow) == argmax(nrow)


@pytest.mark.parametrize("prefix", ["", PREFIX])
@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("requests", [SINGLE, MULTI, SINGLE + MULTI], ids=["single", "multi", "mixed"])
def test_fast_agrees_with_naive(tiny_llama_lm, sharp_llama_lm, bert_tokenizer, requests, batch_size, prefix):
    for model in (tiny_llama_lm, sharp_llama_lm):
        stats = ScoringStats()
        fast = score_requests(
            model, bert_tokenizer, requests, shared_prefix=prefix, batch_size=batch_size, stats=stats
        )
        assert_agree(fast, naive_score(model, bert_tokenizer, requests, shared_prefix=prefix))
        assert stats.prefix_cache_hits == (len(requests) if prefix else 0)


def test_naive_matches_hand_computed_loglikelihood(tiny_llama_lm, bert_tokenizer):
    """The reference itself: log p(cont | ctx) summed by hand from one full forward pass."""
    ctx = bert_tokenizer("the sky is", add_special_tokens=False)["input_ids"]
    cont = bert_tokenizer("the sky is very blue", add_special_tokens=False)["input_ids"][len(ctx) :]
    with torch.no_grad():
        logprobs = torch.log_softmax(tiny_llama_lm(torch.tensor([ctx + cont])).logits[0], -1)
    expected = sum(float(logprobs[len(ctx) - 1 + i, tok]) for i, tok in enumerate(cont))
    [[score]] = naive_score(tiny_llama_lm, bert_tokenizer, [ScoreRequest("the sky is", [" very blue"])])
    assert score.num_tokens == len(cont) == 2
    assert score.logprob_sum == pytest.approx(expected, abs=TOL)
    assert score.logprob_mean == pytest.approx(expected / 2, abs=TOL)


def test_trailing_context_whitespace_moves_to_continuation(tiny_llama_lm, bert_tokenizer):
    a = score_requests(tiny_llama_lm, bert_tokenizer, [ScoreRequest("Sentiment: ", ["positive", "very good"])])
    b = score_requests(tiny_llama_lm, bert_tokenizer, [ScoreRequest("Sentiment:", [" positive", " very good"])])
    assert a == b


@pytest.mark.parametrize("prefix", ["", PREFIX])
def test_empty_context(tiny_llama_lm, sharp_llama_lm, bert_tokenizer, prefix):
    requests = [ScoreRequest("", ["hello", "hello world again"]), ScoreRequest("", [" positive", " negative"])]
    requests += MULTI[:2]
    for model in (tiny_llama_lm, sharp_llama_lm):
        fast = score_requests(model, bert_tokenizer, requests, shared_prefix=prefix, batch_size=3)
        assert_agree(fast, naive_score(model, bert_tokenizer, requests, shared_prefix=prefix))


def test_empty_context_reads_bos_then_eos(bert_tokenizer):
    """Like lm-eval, an empty context is one BOS token (EOS if no BOS); BERT's tokenizer has neither,
    so the model config's ids are used."""
    from transformers import LlamaForCausalLM

    for bos, eos, expected in [(101, 102, 101), (None, 102, 102)]:
        torch.manual_seed(0)
        model = LlamaForCausalLM(tiny_llama_config(bos_token_id=bos, eos_token_id=eos)).eval()
        cont = bert_tokenizer("hello", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([[expected]])).logits[0, -1], -1)
        [[score]] = score_requests(model, bert_tokenizer, [ScoreRequest("", ["hello"])])
        assert score.logprob_sum == pytest.approx(float(logprobs[cont[0]]), abs=TOL)


def test_tokenizer_that_adds_bos(tiny_llama_lm, bos_tokenizer, bert_tokenizer):
    """A Llama-style tokenizer prepends BOS to every sequence, in both paths; the prefix cache still aligns."""
    for prefix in ("", PREFIX):
        stats = ScoringStats()
        fast = score_requests(
            tiny_llama_lm, bos_tokenizer, SINGLE + MULTI, shared_prefix=prefix, batch_size=3, stats=stats
        )
        assert_agree(fast, naive_score(tiny_llama_lm, bos_tokenizer, SINGLE + MULTI, shared_prefix=prefix))
        assert stats.prefix_cache_fallbacks == 0
    # BOS really is read: scores differ from the same text without it.
    plain = naive_score(tiny_llama_lm, bert_tokenizer, SINGLE)
    with_bos = naive_score(tiny_llama_lm, bos_tokenizer, SINGLE)
    assert abs(plain[0][0].logprob_sum - with_bos[0][0].logprob_sum) > 1e-6


def test_single_token_candidates_need_one_pass_per_batch_of_contexts(tiny_llama_lm, bert_tokenizer):
    fast_stats, naive_stats = ScoringStats(), ScoringStats()
    score_requests(tiny_llama_lm, bert_tokenizer, SINGLE, batch_size=2, stats=fast_stats)
    naive_score(tiny_llama_lm, bert_tokenizer, SINGLE, stats=naive_stats)
    assert naive_stats.forward_passes == 2 * len(SINGLE)
    assert fast_stats.forward_passes == math.ceil(len(SINGLE) / 2)
    one_by_one = ScoringStats()
    score_requests(tiny_llama_lm, bert_tokenizer, SINGLE, batch_size=1, stats=one_by_one)
    assert one_by_one.forward_passes == len(SINGLE)  # one per context, not one per candidate


def test_multi_token_candidates_reuse_their_context(tiny_llama_lm, bert_tokenizer):
    stats = ScoringStats()
    requests = [ScoreRequest("a long context " * 10, [" red apple", " green pear tree", " blue"])]
    score_requests(tiny_llama_lm, bert_tokenizer, requests, stats=stats)
    # One pass for the context (gives every first token) + one for the two multi-token tails.
    assert stats.forward_passes == 2
    ctx_len = len(bert_tokenizer("a long context " * 10, add_special_tokens=False)["input_ids"])
    assert stats.tokens_processed == ctx_len + (2 - 1) + (3 - 1)


def test_prefix_cache_is_used(tiny_llama_lm, bert_tokenizer):
    cached, uncached = ScoringStats(), ScoringStats()
    score_requests(tiny_llama_lm, bert_tokenizer, SINGLE, shared_prefix=PREFIX, stats=cached)
    inlined = [ScoreRequest(PREFIX + r.context, r.candidates) for r in SINGLE]
    score_requests(tiny_llama_lm, bert_tokenizer, inlined, stats=uncached)
    prefix_len = len(bert_tokenizer(PREFIX, add_special_tokens=False)["input_ids"])
    assert cached.prefix_cache_hits == len(SINGLE) and cached.prefix_cache_fallbacks == 0
    assert cached.prefix_tokens == prefix_len - 1  # the last prefix token runs with each context
    # The prefix is read once instead of once per request.
    assert uncached.tokens_processed - cached.tokens_processed == (len(SINGLE) - 1) * (prefix_len - 1)
    assert uncached.prefix_cache_hits == 0


def test_misaligned_prefix_falls_back(tiny_llama_lm, bert_tokenizer):
    """'unbeliev' + 'able' tokenises as one word: the prefix's tokens are not a prefix of the whole."""
    prefix = "Review: unbeliev"
    assert bert_tokenizer.tokenize(prefix + "able")[-1] == "unbelievable"
    assert bert_tokenizer.tokenize(prefix)[-2] != "unbelievable"
    requests = [
        ScoreRequest("able acting.\nSentiment:", [" positive", " negative"]),  # misaligned
        ScoreRequest(" film, truly.\nSentiment:", [" good", " bad film"]),  # aligned
    ]
    stats = ScoringStats()
    fast = score_requests(tiny_llama_lm, bert_tokenizer, requests, shared_prefix=prefix, stats=stats)
    assert_agree(fast, naive_score(tiny_llama_lm, bert_tokenizer, requests, shared_prefix=prefix))
    assert (stats.prefix_cache_hits, stats.prefix_cache_fallbacks) == (1, 1)


def test_results_stable_and_model_state_restored(tiny_llama_lm, bert_tokenizer):
    tiny_llama_lm.train()
    first = score_requests(tiny_llama_lm, bert_tokenizer, MULTI, shared_prefix=PREFIX, batch_size=2)
    second = score_requests(tiny_llama_lm, bert_tokenizer, MULTI, shared_prefix=PREFIX, batch_size=2)
    assert first == second  # no cache state leaks between batches or calls; dropout off while scoring
    assert tiny_llama_lm.training


def test_edge_cases(tiny_llama_lm, bert_tokenizer):
    out = score_requests(tiny_llama_lm, bert_tokenizer, [ScoreRequest("no candidates", []), SINGLE[0]])
    assert out[0] == [] and len(out[1]) == 2 and all(isinstance(c, CandidateScore) for c in out[1])
    assert score_requests(tiny_llama_lm, bert_tokenizer, []) == []
    with pytest.raises(ValueError, match="encodes to no tokens"):
        score_requests(tiny_llama_lm, bert_tokenizer, [ScoreRequest("hello", [" ", " yes"])])
