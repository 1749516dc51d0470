"""`vera` (Kopiczko et al. 2024, VeRA) via PEFT: one pair of frozen random matrices A (r, in),
B (out, r) shared by all adapted layers; each layer trains only two scaling vectors,
ΔW = diag(λ_b)·B·diag(λ_d)·A (λ_b starts at zero, λ_d at d_initial). Far fewer trainable parameters
than LoRA (r + out per layer), so r is large (256 in the paper). The classification head trains alongside.

PEFT 0.21 sizes the shared A, B to the largest adapted layer and slices them per layer, so layers of
different shapes (Llama's q_proj and its narrower grouped-query v_proj) can share them.
Artifact: `<run_dir>/adapter/`, a PEFT adapter that also stores A and B (`save_projection`), so it
reloads exactly without regenerating them from the seed.
"""

from __future__ import annotations

from pydantic import Field

from tunelab.methods.peft_common import PeftStrategy
from tunelab.methods.registry import register
from tunelab.model_changes.peft_common import table_targets
from tunelab.settings import StrictSettings


class VeraSettings(StrictSettings):
    r: int = Field(256, ge=1)
    """Rank of the shared random projections A, B."""
    target_modules: list[str] | None = None
    """Linear layers to adapt, by name suffix. Default: PEFT's table (query/value, q_proj/v_proj)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the VeRA branch's input."""
    d_initial: float = Field(0.1, gt=0)
    """Initial value of the λ_d vectors (the paper finds small values, ≤ 0.1, work best)."""
    projection_seed: int = 0
    """Seed of the shared random A, B (stored in the adapter anyway)."""

    def peft_config(self, model_config, task_type: str, tokenizer_path: str | None = None):
        from peft import VeraConfig
        from peft.utils import TRANSFORMERS_MODELS_TO_VERA_TARGET_MODULES_MAPPING as TABLE

        return VeraConfig(
            task_type=task_type, r=self.r, vera_dropout=self.dropout, d_initial=self.d_initial,
            projection_prng_key=self.projection_seed, save_projection=True,
            target_modules=self.target_modules or table_targets(TABLE, model_config, "VeRA"),
        )


@register("vera", "shared frozen random low-rank projections, trained per-layer scaling vectors + the head (PEFT VeRA)",
          family="parameter-efficient")
class VeraStrategy(PeftStrategy):
    Settings = VeraSettings
