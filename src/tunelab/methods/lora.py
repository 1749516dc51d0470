"""`lora` (Hu et al. 2021) via PEFT: a trainable low-rank update W + (alpha/r)·B·A on chosen linear
layers (B starts at zero), the classification head trained alongside. `tunelab export RUN --out DIR`
merges the update into the base weights and writes a plain model directory."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from tunelab.methods.peft_common import PeftStrategy, SettingsError
from tunelab.methods.registry import register

# Attention and MLP projections for Llama-style decoders (QLoRA's finding: adapting every linear
# layer matters more than the rank); query/value for BERT-style encoders, as in the LoRA paper.
LLAMA_STYLE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEFAULT_TARGETS = {
    **{t: LLAMA_STYLE for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2", "granite")},
    **{t: ["query", "value"] for t in ("bert", "roberta", "xlm-roberta", "electra", "camembert")},
}


def default_targets(model_config) -> list[str]:
    """Our defaults per architecture, else PEFT's own table; unknown architectures must name them."""
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    model_type = getattr(model_config, "model_type", None)
    targets = DEFAULT_TARGETS.get(model_type) or PEFT_DEFAULTS.get(model_type)
    if not targets:
        raise SettingsError(
            "target_modules",
            f"no default LoRA target modules for model_type {model_type!r}; set strategy.target_modules to the "
            f"names of its linear layers (e.g. [q_proj, v_proj])",
        )
    return list(targets)


class LoraSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    r: int = Field(8, ge=1)
    """Rank of the update B·A."""
    alpha: float = Field(16.0, gt=0)
    """Scaling: the update is multiplied by alpha / r."""
    dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the LoRA branch's input."""
    target_modules: list[str] | None = None
    """Linear layers to adapt, by name suffix (e.g. [query, value]). Default: q/k/v/o + gate/up/down
    projections for Llama-style models, query/value for BERT-style ones, PEFT's table otherwise."""
    use_rslora: bool = False
    """Rank-stabilised scaling alpha / sqrt(r) (Kalajdzievski 2023)."""

    def peft_config(self, model_config, task_type: str, tokenizer_path: str | None = None):
        from peft import LoraConfig

        return LoraConfig(
            task_type=task_type, r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
            target_modules=self.target_modules or default_targets(model_config), use_rslora=self.use_rslora,
        )


@register("lora", "low-rank updates of chosen linear layers + the head (PEFT LoRA); export merges them",
          family="parameter-efficient")
class LoraStrategy(PeftStrategy):
    Settings = LoraSettings
    mergeable = True
