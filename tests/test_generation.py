"""Generation (greedy/sampling, stop strings, left-padded batches) and answer-only SFT on tiny Llamas."""

from __future__ import annotations

import pytest
import torch

from tunelab.config import TrainConfig
from tunelab.generation import (
    IGNORE,
    AnswerLoss,
    GenerationOptions,
    SftCollator,
    cut_at_stop,
    encode_prompt,
    encode_sft,
    generate,
    generate_text,
    train_sft,
)

PROMPTS = [
    "Question: what colour is the sky on a clear summer day?\nAnswer:",
    "Q: capital of France?\nA:",
    "Review: the plot wanders and the acting is wooden.\nSentiment:",
    "2 + 2 =",
    "Translate to French: the cat sleeps.\nFrench:",
]


@pytest.fixture
def sharp_lm():
    """Larger random weights: peaky next-token distributions, so greedy choices are not near-ties."""
    from transformers import LlamaForCausalLM

    from conftest import tiny_llama_config

    torch.manual_seed(3)
    return LlamaForCausalLM(tiny_llama_config(initializer_range=0.3)).eval()


def test_cut_at_stop_cuts_before_the_earliest_stop():
    assert cut_at_stop("a b\n\nQ: c", ["\n\n", "Q:"]) == "a b"
    assert cut_at_stop("a Q: b\n\n", ["\n\n", "Q:"]) == "a "
    assert cut_at_stop("no stop here", ["###"]) == "no stop here"
    assert cut_at_stop("text", []) == "text"
    assert cut_at_stop("\n\nreasoning\n\nQ: next", ["\n\n"]) == "\n\nreasoning"  # leading blank lines stay


def test_greedy_generation_is_deterministic(sharp_lm, bert_tokenizer):
    options = GenerationOptions(max_new_tokens=8)
    first = generate_text(sharp_lm, bert_tokenizer, PROMPTS, options)
    assert first == generate_text(sharp_lm, bert_tokenizer, PROMPTS, options)
    assert all(text.strip() for text in first)


def test_batched_generation_equals_one_at_a_time(sharp_lm, bert_tokenizer):
    batched = generate_text(sharp_lm, bert_tokenizer, PROMPTS, GenerationOptions(max_new_tokens=8, batch_size=5))
    alone = generate_text(sharp_lm, bert_tokenizer, PROMPTS, GenerationOptions(max_new_tokens=8, batch_size=1))
    assert batched == alone


def test_sampling_is_seeded_and_gives_n_samples(sharp_lm, bert_tokenizer):
    options = GenerationOptions(max_new_tokens=6, do_sample=True, temperature=1.5, seed=7)
    first = generate(sharp_lm, bert_tokenizer, PROMPTS[:2], options, samples=4)
    assert [len(row) for row in first] == [4, 4]
    assert first == generate(sharp_lm, bert_tokenizer, PROMPTS[:2], options, samples=4)
    other = generate(sharp_lm, bert_tokenizer, PROMPTS[:2], options.model_copy(update={"seed": 8}), samples=4)
    assert other != first
    assert len({text for row in first for text in row}) > 2  # sampled chains differ from each other


def test_stop_strings_cut_the_continuation(sharp_lm, bert_tokenizer):
    full = generate_text(sharp_lm, bert_tokenizer, PROMPTS[:1], GenerationOptions(max_new_tokens=12))[0]
    words = full.split()
    assert len(words) >= 4, full
    stop = words[2]
    stopped = generate_text(sharp_lm, bert_tokenizer, PROMPTS[:1], GenerationOptions(max_new_tokens=12, stop=[stop]))[0]
    assert stopped == cut_at_stop(full, [stop])
    assert stop not in stopped


def test_long_prompts_keep_their_end(sharp_lm, bert_tokenizer):
    long_prompt = "word " * 100 + "Answer:"
    with pytest.warns(UserWarning, match="longer than 20 tokens"):
        cut = generate_text(sharp_lm, bert_tokenizer, [long_prompt], GenerationOptions(max_new_tokens=4), max_prompt_tokens=20)
    tail = bert_tokenizer.decode(encode_prompt(bert_tokenizer, long_prompt)[-20:])
    assert cut == generate_text(sharp_lm, bert_tokenizer, [tail], GenerationOptions(max_new_tokens=4))


def test_sft_labels_cover_only_answer_tokens(bert_tokenizer):
    prompt, answer = "Question: what colour is the sky?\nAnswer:", " blue"
    feature = encode_sft(bert_tokenizer, prompt, answer, max_length=64, eos_id=102)
    prompt_ids = encode_prompt(bert_tokenizer, prompt)
    answer_ids = bert_tokenizer(answer, add_special_tokens=False)["input_ids"] + [102]
    assert feature["input_ids"] == prompt_ids + answer_ids
    assert feature["labels"] == [IGNORE] * len(prompt_ids) + answer_ids
    short = encode_sft(bert_tokenizer, prompt, answer, max_length=5, eos_id=102)  # the prompt loses its beginning
    assert short["input_ids"] == prompt_ids[-(5 - len(answer_ids)) :] + answer_ids
    batch = SftCollator(pad_id=0)([feature, encode_sft(bert_tokenizer, "Q:", " a pale grey", 64, 102)])
    pads = batch["attention_mask"] == 0
    assert pads[1, 0] and not pads[0].any()  # left padding
    assert (batch["labels"][pads] == IGNORE).all()


def test_answer_loss_is_the_mean_over_answer_tokens(tiny_llama_lm, bert_tokenizer):
    pairs = [("Question: what colour is the sky?\nAnswer:", " blue"), ("Q: capital?\nA:", " the city of paris")]
    features = [encode_sft(bert_tokenizer, p, a, 64, 102) for p, a in pairs]
    out = AnswerLoss(tiny_llama_lm)(**SftCollator(pad_id=0)(features))
    # Reference: each example alone, unpadded, full logits; -log p summed over answer positions.
    total, count, means = 0.0, 0, []
    for f in features:
        ids = torch.tensor([f["input_ids"]])
        logprobs = torch.log_softmax(tiny_llama_lm(input_ids=ids).logits[0, :-1], -1)  # (T - 1, V)
        labels = torch.tensor(f["labels"][1:])
        picked = logprobs[labels != IGNORE].gather(1, labels[labels != IGNORE][:, None])[:, 0]
        total, count = total - float(picked.sum().detach()), count + len(picked)
        means.append(float(picked.mean().detach()))
    assert float(out["loss"].detach()) == pytest.approx(total / count, abs=1e-4)
    assert out["logits"][:, 0].tolist() == pytest.approx(means, abs=1e-4)


def answer_logprob(model, tokenizer, pairs) -> float:
    features = [encode_sft(tokenizer, p, a, 64, 102) for p, a in pairs]
    with torch.no_grad():
        return float(AnswerLoss(model.eval())(**SftCollator(pad_id=0)(features))["logits"].mean())


def test_sft_trains_and_restores_the_best_dev_epoch(bert_tokenizer, tmp_path):
    from transformers import LlamaForCausalLM

    from conftest import tiny_llama_config

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config())
    pairs = [("Question: colour of the sky?\nAnswer:", " blue"), ("Question: capital of france?\nAnswer:", " paris")]
    before = answer_logprob(model, bert_tokenizer, pairs)
    cfg = TrainConfig(learning_rate=2e-2, epochs=5, batch_size=2, log_to=[], progress_bar=False, group_by_length=False,
                      lr_scheduler="constant")
    stats = train_sft(model, bert_tokenizer, pairs, pairs, cfg, max_length=64, out_dir=tmp_path)
    assert stats.best_dev["answer_logprob"] > before + 1.0
    assert answer_logprob(model, bert_tokenizer, pairs) == pytest.approx(stats.best_dev["answer_logprob"], abs=1e-4)
