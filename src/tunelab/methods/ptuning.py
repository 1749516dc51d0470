"""`ptuning` (Liu et al. 2021, P-tuning v1) via PEFT: virtual-token embeddings at the input, produced
by a prompt encoder (an MLP, or a bidirectional LSTM followed by an MLP) that ties the tokens
together; the classification head trains alongside."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from tunelab.methods.peft_common import PeftStrategy
from tunelab.methods.registry import register
from tunelab.settings import StrictSettings


class PTuningSettings(StrictSettings):
    peft_type: ClassVar[str] = "P_TUNING"
    """PEFT's `PeftType` of this method (a soft prompt: see model_changes.peft.is_soft_prompt)."""

    num_virtual_tokens: int = Field(20, ge=1)
    """Number of virtual tokens; num_virtual_tokens + model.max_length must fit the model's positions."""
    encoder: Literal["mlp", "lstm"] = "mlp"
    """Prompt encoder: a 2-layer MLP, or a bidirectional LSTM + MLP (the paper's choice)."""
    encoder_hidden_size: int | None = Field(None, ge=1)
    """Hidden width of the prompt encoder; default: the model's hidden size."""
    encoder_num_layers: int = Field(2, ge=1)
    """LSTM layers (the MLP encoder always has 2 layers in PEFT)."""
    encoder_dropout: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _layers_only_for_lstm(self):
        if self.encoder == "mlp" and self.encoder_num_layers != 2:
            raise ValueError("encoder_num_layers is only settable with encoder: lstm (the MLP encoder has 2 layers)")
        return self

    def peft_config(self, model_config, task_type: str, tokenizer_path: str | None = None):
        from peft import PromptEncoderConfig

        return PromptEncoderConfig(
            task_type=task_type, num_virtual_tokens=self.num_virtual_tokens,
            encoder_reparameterization_type=self.encoder.upper(),
            encoder_hidden_size=self.encoder_hidden_size or model_config.hidden_size,
            encoder_num_layers=self.encoder_num_layers, encoder_dropout=self.encoder_dropout,
        )


@register("ptuning", "virtual input tokens from a prompt encoder (MLP or LSTM) + the head (P-tuning v1, via PEFT)",
          family="parameter-efficient")
class PTuningStrategy(PeftStrategy):
    Settings = PTuningSettings
