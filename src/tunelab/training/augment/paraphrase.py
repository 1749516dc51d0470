"""Paraphrase by a causal LM: the model continues an instruction holding the text (`prompt`, with
`{text}` replaced; wrapped in the model's chat template when it has one, as instruct models such as
the embedded smollm2-135m expect) and its first line is the new text. `copies` samples per text,
temperature / top-p sampling under the run's seed (tunelab.generation: the same seed gives the same
texts). The model is loaded through tunelab.models, like every other model of a run, and freed after.
"""

from __future__ import annotations

import re

from tunelab.generation import GenerationOptions, generate
from tunelab.prompts.chat import apply_chat_template

LEAD_IN = re.compile(r"^\s*(?:sure[,!.]?\s*)?(?:here(?:'s| is)[^:\n]*:|paraphrase[d]?\s*:|rewritten\s*:|sentence\s*:)\s*",
                     re.IGNORECASE)
"""What instruct models put before the answer ("Sure! Here is a rewrite:"), cut off."""


def instruction(template: str, text: str, tokenizer) -> str:
    return apply_chat_template(tokenizer, template.replace("{text}", text), "auto")


def clean(output: str) -> str:
    """The first non-empty line of a continuation, without a lead-in and without wrapping quotes."""
    lines = [line.strip() for line in LEAD_IN.sub("", output.strip()).splitlines() if line.strip()]
    line = LEAD_IN.sub("", lines[0]) if lines else ""
    return line.strip().strip('"“”\'').strip()


def paraphrase_copies(texts: list[str], copies: int, settings, seed: int, experiment) -> list[list[str]]:
    """`copies` paraphrases per text (result[i] for texts[i]), raw (the caller drops repeats and copies)."""
    from tunelab.models import load_model

    loaded = load_model(settings.model, "causal_lm", device=experiment.model.device, dtype=experiment.model.dtype,
                        trust_remote_code=experiment.model.trust_remote_code)
    options = GenerationOptions(max_new_tokens=settings.max_new_tokens, do_sample=True, temperature=settings.temperature,
                                top_p=settings.top_p, seed=seed, batch_size=settings.batch_size)
    prompts = [instruction(settings.prompt, text, loaded.tokenizer) for text in texts]
    outputs = generate(loaded.model, loaded.tokenizer, prompts, options, samples=copies,
                       max_prompt_tokens=experiment.model.max_length)
    return [[clean(o) for o in row] for row in outputs]
