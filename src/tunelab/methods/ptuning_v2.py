"""`ptuning_v2` (Liu et al. 2022, P-Tuning v2): deep prompts — trainable key/value prefixes at every
layer, learned directly (no reparameterisation MLP) — with a classification head on top. In PEFT
this is prefix tuning with `prefix_projection=False`."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from tunelab.methods.peft_common import PeftStrategy
from tunelab.methods.registry import register
from tunelab.settings import StrictSettings


class PTuningV2Settings(StrictSettings):
    peft_type: ClassVar[str] = "PREFIX_TUNING"
    """PEFT's `PeftType` of this method (a soft prompt: see model_changes.peft.is_soft_prompt)."""

    num_virtual_tokens: int = Field(20, ge=1)
    """Prompt length per layer; num_virtual_tokens + model.max_length must fit the model's positions."""

    def peft_config(self, model_config, task_type: str, tokenizer_path: str | None = None):
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=self.num_virtual_tokens, prefix_projection=False)


@register("ptuning_v2", "deep prompts at every layer, no reparameterisation, + the head (P-tuning v2, via PEFT)",
          family="parameter-efficient")
class PTuningV2Strategy(PeftStrategy):
    Settings = PTuningV2Settings
