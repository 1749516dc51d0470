"""`prompt_tuning` (Lester et al. 2021) via PEFT: n trainable virtual-token embeddings are prepended
to the input; the model stays frozen, the classification head trains alongside."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from tunelab.methods.peft_common import PeftStrategy
from tunelab.methods.registry import register
from tunelab.settings import StrictSettings

INIT = {"random": "RANDOM", "vocab": "SAMPLE_VOCAB", "text": "TEXT"}


class PromptTuningSettings(StrictSettings):
    peft_type: ClassVar[str] = "PROMPT_TUNING"
    """PEFT's `PeftType` of this method (a soft prompt: see model_changes.peft.is_soft_prompt)."""

    num_virtual_tokens: int = Field(20, ge=1)
    """Soft-prompt length; num_virtual_tokens + model.max_length must fit the model's positions."""
    init: Literal["random", "vocab", "text"] = "vocab"
    """Initial soft prompt: random normal vectors, embeddings of random vocabulary tokens, or the
    embeddings of `init_text` (repeated or cut to the length). Lester et al. found random init worst."""
    init_text: str | None = None
    """Text whose token embeddings initialise the prompt (with init: text), e.g. 'Classify the sentiment:'."""

    @model_validator(mode="after")
    def _text_with_text_init(self):
        if (self.init == "text") != (self.init_text is not None):
            raise ValueError("init: text needs init_text, and init_text is only used with init: text")
        return self

    def peft_config(self, model_config, task_type: str, tokenizer_path: str | None = None):
        from peft import PromptTuningConfig, PromptTuningInit

        return PromptTuningConfig(
            task_type=task_type, num_virtual_tokens=self.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit[INIT[self.init]], prompt_tuning_init_text=self.init_text,
            tokenizer_name_or_path=tokenizer_path if self.init == "text" else None,
        )


@register("prompt_tuning", "trainable soft-prompt embeddings prepended to the input + the head (PEFT prompt tuning)",
          family="parameter-efficient")
class PromptTuningStrategy(PeftStrategy):
    Settings = PromptTuningSettings
