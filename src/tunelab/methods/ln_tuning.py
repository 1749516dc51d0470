"""`ln_tuning` (Zhao et al. 2023, "Tuning LayerNorm in attention") via PEFT: only the LayerNorm
(RMSNorm) weights and biases train, on a trainable copy of each chosen norm layer; the classification
head trains alongside. The smallest delta there is besides BitFit: 2·hidden per LayerNorm.

Artifact: `<run_dir>/adapter/`, a PEFT adapter holding the trained norm layers.
"""

from __future__ import annotations

from tunelab.methods.peft_common import PeftStrategy
from tunelab.methods.registry import register
from tunelab.model_changes.peft_common import table_targets
from tunelab.settings import StrictSettings

# PEFT's table has no BERT-style encoders: their norms are all named `LayerNorm` (embeddings,
# attention output, feed-forward output).
BERT_STYLE = {t: ["LayerNorm"] for t in ("bert", "roberta", "xlm-roberta", "electra", "camembert")}


class LNTuningSettings(StrictSettings):
    target_modules: list[str] | None = None
    """Norm layers to train, by name suffix. Default: every LayerNorm for BERT-style encoders; PEFT's
    table otherwise (Llama: input_layernorm, post_attention_layernorm and the final norm)."""

    def peft_config(self, model_config, task_type: str, tokenizer_path: str | None = None):
        from peft import LNTuningConfig
        from peft.utils import TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING as TABLE

        targets = self.target_modules or table_targets(TABLE, model_config, "LN tuning", BERT_STYLE)
        return LNTuningConfig(task_type=task_type, target_modules=targets)


@register("ln_tuning", "only the LayerNorm/RMSNorm weights and biases + the head (PEFT LN tuning)",
          family="parameter-efficient")
class LNTuningStrategy(PeftStrategy):
    Settings = LNTuningSettings
