"""`prefix_tuning` (Li & Liang 2021) via PEFT: trainable key/value prefixes at every layer, produced
by a reparameterisation MLP (embedding → hidden → layers·2·dim) that stabilises training; the
classification head trains alongside. Without the MLP it is `ptuning_v2`."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from tunelab.methods.peft_common import PeftStrategy
from tunelab.methods.registry import register
from tunelab.settings import StrictSettings


class PrefixTuningSettings(StrictSettings):
    peft_type: ClassVar[str] = "PREFIX_TUNING"
    """PEFT's `PeftType` of this method (a soft prompt: see model_changes.peft.is_soft_prompt)."""

    num_virtual_tokens: int = Field(20, ge=1)
    """Prefix length per layer; num_virtual_tokens + model.max_length must fit the model's positions."""
    encoder_hidden_size: int | None = Field(None, ge=1)
    """Hidden width of the reparameterisation MLP; default: the model's hidden size."""

    def peft_config(self, model_config, task_type: str, tokenizer_path: str | None = None):
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(
            task_type=task_type, num_virtual_tokens=self.num_virtual_tokens, prefix_projection=True,
            encoder_hidden_size=self.encoder_hidden_size or model_config.hidden_size,
        )


@register("prefix_tuning", "trainable key/value prefixes at every layer via an MLP + the head (PEFT prefix tuning)",
          family="parameter-efficient")
class PrefixTuningStrategy(PeftStrategy):
    Settings = PrefixTuningSettings
