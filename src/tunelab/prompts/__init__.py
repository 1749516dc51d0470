"""Prompts as data: Jinja templates, verbalizers, demonstration selection, chain-of-thought.

Pure Python (no model forward passes except `embed_texts`); the prompt strategies build on these
pieces. The machinery those strategies share sits here too, imported by its module (it loads
models and scores, so the package does not re-export it): `plan` (the checks and the saved
`PromptPlan`), `engine` (rendering, length checks, candidate scoring), `search` (label-word and
template search on dev).
"""

from tunelab.prompts.chat import apply_chat_template, apply_chat_template_parts, has_chat_template
from tunelab.prompts.cot import (
    ANSWER_CUE,
    ANSWER_CUE_NUMERIC,
    ANSWER_PHRASE,
    cot_answer,
    cot_demonstrations,
    extract_answer,
    majority_vote,
    render_cot_demonstration,
    zero_shot_cot_step1,
    zero_shot_cot_step2,
)
from tunelab.prompts.demonstrations import (
    DemonstrationsDroppedWarning,
    embed_texts,
    example_text,
    fit_demonstrations,
    make_embed_fn,
    nearest_demonstrations,
    select_balanced,
    select_demonstrations,
    select_random,
)
from tunelab.prompts.template import (
    DEFAULT_COT_CUE,
    DEFAULT_DEMONSTRATION_TEMPLATE,
    DEFAULT_SELF_CHECK,
    PART_ORDER,
    PromptSettings,
    build_prompt,
    build_prompt_parts,
    compile_template,
    render,
    render_demonstration,
    render_parts,
    render_query,
    resolve_template,
    template_fields,
    validate_fields,
)
from tunelab.prompts.verbalizer import (
    CONTENT_FREE_INPUTS,
    Candidates,
    Verbalizer,
    calibrate,
    content_free_examples,
    search_label_words,
)

__all__ = [
    "ANSWER_CUE", "ANSWER_CUE_NUMERIC", "ANSWER_PHRASE", "CONTENT_FREE_INPUTS", "DEFAULT_COT_CUE",
    "DEFAULT_DEMONSTRATION_TEMPLATE", "DEFAULT_SELF_CHECK", "PART_ORDER", "Candidates",
    "DemonstrationsDroppedWarning", "PromptSettings", "Verbalizer", "apply_chat_template",
    "apply_chat_template_parts", "build_prompt", "build_prompt_parts", "calibrate", "compile_template",
    "content_free_examples", "cot_answer", "cot_demonstrations", "embed_texts", "example_text",
    "extract_answer", "fit_demonstrations", "has_chat_template", "majority_vote", "make_embed_fn",
    "nearest_demonstrations", "render", "render_cot_demonstration", "render_demonstration", "render_parts",
    "render_query", "resolve_template", "search_label_words", "select_balanced", "select_demonstrations",
    "select_random", "template_fields", "validate_fields", "zero_shot_cot_step1", "zero_shot_cot_step2",
]
