"""Back-translation (Sennrich et al. 2016; UDA, Xie et al. 2020): `forward_model` translates each text
into a pivot language, `copies` samples per text (temperature / top-p: sampled translations differ
more than beam outputs, which is what augmentation wants), and `backward_model` translates each
pivot text back greedily. Both are sequence-to-sequence models (Marian, T5, mBART, ...) given by hub
name or local directory, loaded with transformers' AutoModelForSeq2SeqLM in fp32 on CPU.
"""

from __future__ import annotations

import torch


def load_seq2seq(name: str, device: torch.device, trust_remote_code: bool):
    """(model, tokenizer) of a translation model; load failures become one ModelError naming the model."""
    from transformers import AutoModelForSeq2SeqLM

    from tunelab.models import load_tokenizer, resolve_model_path, with_hub_errors

    path = resolve_model_path(name)
    tokenizer = load_tokenizer(path, trust_remote_code)
    model = with_hub_errors(path, lambda **hub: AutoModelForSeq2SeqLM.from_pretrained(
        path, dtype=torch.float32 if device.type == "cpu" else "auto", trust_remote_code=trust_remote_code, **hub))
    return model.to(device).eval(), tokenizer


def translate(model, tokenizer, texts: list[str], settings, *, samples: int, sample: bool, max_length: int) -> list[list[str]]:
    """`samples` translations per text: sampled (temperature, top_p) or greedy."""
    device = next(model.parameters()).device
    decoding = (dict(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0) if sample
                else dict(do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None))
    result = []
    for start in range(0, len(texts), settings.batch_size):
        chunk = texts[start : start + settings.batch_size]
        batch = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask")}  # not token_type_ids: seq2seq models refuse it
        with torch.inference_mode():
            out = model.generate(**inputs, num_return_sequences=samples, max_new_tokens=settings.max_new_tokens,
                                 **decoding)  # (B * samples, T)
        decoded = [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]
        result += [decoded[i * samples : (i + 1) * samples] for i in range(len(chunk))]
    return result


def back_translation_copies(texts: list[str], copies: int, settings, seed: int, experiment) -> list[list[str]]:
    """`copies` back-translations per text (result[i] for texts[i]), raw (the caller drops repeats)."""
    from tunelab.models import resolve_device

    device = resolve_device(experiment.model.device)
    trust = experiment.model.trust_remote_code
    limit = experiment.model.max_length
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(seed)
        model, tokenizer = load_seq2seq(settings.forward_model, device, trust)
        pivots = translate(model, tokenizer, texts, settings, samples=copies, sample=True, max_length=limit)
        del model
        model, tokenizer = load_seq2seq(settings.backward_model, device, trust)
        flat = [p for row in pivots for p in row]
        back = [row[0] for row in translate(model, tokenizer, flat, settings, samples=1, sample=False, max_length=limit)]
    return [back[i * copies : (i + 1) * copies] for i in range(len(texts))]
