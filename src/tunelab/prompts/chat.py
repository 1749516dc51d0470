"""Chat templates: wrap a finished prompt as one user turn for instruct models."""

from __future__ import annotations

from typing import Any, Literal

from tunelab.errors import ConfigError


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer carries a chat template (instruct models do, base models do not)."""
    return bool(getattr(tokenizer, "chat_template", None))


def apply_chat_template(tokenizer: Any, prompt_text: str, use_chat_template: Literal["auto", True, False] = "auto") -> str:
    """Wrap the prompt as one user message with the generation prompt (instruct models).

    ``"auto"`` uses the tokenizer's chat template when it has one, else returns the plain text
    (base models); ``True`` requires one; ``False`` never wraps. The result may contain special
    tokens as text (e.g. ``<|im_start|>``): tokenize it with ``add_special_tokens=False``.
    """
    if use_chat_template not in ("auto", True, False):
        raise ConfigError(f"prompt.use_chat_template must be auto, true or false, not {use_chat_template!r}")
    if use_chat_template is False or (use_chat_template == "auto" and not has_chat_template(tokenizer)):
        return prompt_text
    if not has_chat_template(tokenizer):
        raise ConfigError("prompt.use_chat_template is true but this model's tokenizer has no chat template")
    messages = [{"role": "user", "content": prompt_text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def apply_chat_template_parts(
    tokenizer: Any, prefix: str, query: str, use_chat_template: Literal["auto", True, False] = "auto"
) -> tuple[str, str]:
    """`apply_chat_template` on ``prefix + query``, split again so the chat prefix stays cacheable.

    The chat header goes into the prefix and the footer into the query. If the template alters the
    text so the split point cannot be found, everything is returned as the query ('' prefix).
    """
    full = apply_chat_template(tokenizer, prefix + query, use_chat_template)
    at = full.find(prefix + query)
    if at < 0:
        return "", full
    cut = at + len(prefix)
    return full[:cut], full[cut:]
