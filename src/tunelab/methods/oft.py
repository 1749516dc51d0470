"""`oft` (Qiu et al. 2023, orthogonal fine-tuning) via PEFT: each adapted linear layer's input is
rotated by a trainable block-diagonal orthogonal matrix R (W' = W·R, R built from skew-symmetric
blocks by the Cayley transform, identity at the start), which keeps the angles between neurons.
The classification head trains alongside.

A layer whose input size `block_size` does not divide gets the nearest block size that does (PEFT
adjusts it per layer and warns: "Invalid `oft_block_size` (5)! Adjusted ... to (4)"); the adapter
config keeps the requested size and PEFT re-derives the same adjustment when it loads.
Artifact: `<run_dir>/adapter/`, a standard PEFT adapter.
"""

from __future__ import annotations

from pydantic import Field

from tunelab.methods.peft_common import PeftStrategy
from tunelab.methods.registry import register
from tunelab.model_changes.peft_common import table_targets
from tunelab.settings import StrictSettings


class OFTSettings(StrictSettings):
    block_size: int = Field(32, ge=2)
    """Size of each orthogonal block (the number of blocks is in_features / block_size); a size that does
    not divide a layer's input is lowered for that layer by PEFT."""
    target_modules: list[str] | None = None
    """Linear layers to adapt, by name suffix. Default: PEFT's table (query/value, q_proj/v_proj)."""
    coft: bool = False
    """Constrained OFT: keep R within `eps` of the identity."""
    eps: float = Field(6e-5, gt=0)
    """COFT's radius (used with coft: true)."""
    module_dropout: float = Field(0.0, ge=0, lt=1)
    """Probability of replacing a block by the identity during training (OFT's multiplicative dropout)."""

    def peft_config(self, model_config, task_type: str, tokenizer_path: str | None = None):
        from peft import OFTConfig
        from peft.utils import TRANSFORMERS_MODELS_TO_OFT_TARGET_MODULES_MAPPING as TABLE

        return OFTConfig(
            task_type=task_type, r=0, oft_block_size=self.block_size, coft=self.coft, eps=self.eps,
            module_dropout=self.module_dropout, target_modules=self.target_modules or table_targets(TABLE, model_config, "OFT"),
        )


@register("oft", "trainable block-diagonal orthogonal rotations of chosen linear layers + the head (PEFT OFT)",
          family="parameter-efficient")
class OFTStrategy(PeftStrategy):
    Settings = OFTSettings
