"""`lora` (Hu et al. 2021) via PEFT: a trainable low-rank update W + (alpha/r)·B·A on chosen linear
layers (B starts at zero), the classification head trained alongside. `tunelab export RUN --out DIR`
merges the update into the base weights and writes a plain model directory.

Variants, all settings of the same method:
- `use_rslora`: scaling alpha/sqrt(r) (rsLoRA). `use_dora`: DoRA (Liu et al. 2024) splits each
  adapted weight into a trainable magnitude vector and a LoRA-updated direction.
- `init: pissa | pissa_niter_<n> | olora`: PiSSA (Meng et al. 2024) / OLoRA (Büyükakyüz 2024) start
  A, B at the principal singular vectors (a QR factor) of W and train them, the base keeping the
  residual W_res = W - s·B0·A0. The artifact must stay relative to the *original* W, so on save the
  adapter is converted as PEFT does (`subtract_mutated_init`): ΔW = s·(B·A - B0·A0) =
  s·[B | -B0]·[A ; A0], a plain LoRA adapter of rank 2r with alpha doubled (same scaling), which
  `PeftModel.from_pretrained(original base, dir)` loads. The head and DoRA magnitudes are kept as they are.
- `loraplus_lr_ratio`: LoRA+ (Hayou et al. 2024), PEFT's `create_loraplus_optimizer`: the B matrices
  (and, as PEFT groups them, every 1-D trainable tensor) learn at lr × ratio, the rest at lr.

Artifact: `<run_dir>/adapter/` (adapter_config.json + adapter_model.safetensors), a standard PEFT adapter.
"""

from __future__ import annotations

import re

import torch
from pydantic import Field, field_validator

from tunelab.methods.peft_common import PeftStrategy
from tunelab.methods.registry import register
from tunelab.model_changes.peft_common import SettingsError
from tunelab.settings import StrictSettings

# Attention and MLP projections for Llama-style decoders (QLoRA's finding: adapting every linear
# layer matters more than the rank); query/value for BERT-style encoders, as in the LoRA paper.
LLAMA_STYLE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEFAULT_TARGETS = {
    **{t: LLAMA_STYLE for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2", "granite")},
    **{t: ["query", "value"] for t in ("bert", "roberta", "xlm-roberta", "electra", "camembert")},
    "mpnet": ["q", "v"],  # MPNet's attention projections are named q, k, v, o (absent from PEFT's table)
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


class LoraSettings(StrictSettings):
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
    use_dora: bool = False
    """DoRA: a trainable magnitude per output feature times the LoRA-updated direction (Liu et al. 2024)."""
    init: str = "default"
    """Initial A, B: default (A Kaiming-uniform, B zero), gaussian (A normal, B zero), pissa (principal
    singular vectors of W, exact SVD), pissa_niter_<n> (fast randomised SVD, n iterations) or olora
    (QR of W). PiSSA/OLoRA move s·B0·A0 out of the base weights; the saved adapter is converted back
    to a plain LoRA adapter of rank 2r relative to the original weights."""
    loraplus_lr_ratio: float | None = Field(None, gt=0)
    """LoRA+: the B matrices learn at train.learning_rate × this ratio (the paper suggests 2-16;
    PEFT also puts every other 1-D trainable tensor in that group). None: one learning rate."""

    @field_validator("init")
    @classmethod
    def _known_init(cls, value: str) -> str:
        if value not in INITS and not re.fullmatch(r"pissa_niter_[1-9]\d*", value):
            raise ValueError(f"init must be one of {', '.join(INITS)} or pissa_niter_<n> (n >= 1), not {value!r}")
        return value

    def peft_config(self, model_config, task_type: str, tokenizer_path: str | None = None):
        from peft import LoraConfig

        return LoraConfig(
            task_type=task_type, r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
            target_modules=self.target_modules or default_targets(model_config), use_rslora=self.use_rslora,
            use_dora=self.use_dora, init_lora_weights=INITS.get(self.init, self.init),
        )

    def on_wrapped(self, model) -> None:
        """After get_peft_model: keep PiSSA/OLoRA's initial factors for the save, ask for LoRA+'s optimizer."""
        if self.init.startswith(("pissa", "olora")):
            convert_on_save(model)
        if self.loraplus_lr_ratio is not None:
            from tunelab.train import TrainHooks, attach_hooks

            attach_hooks(model, TrainHooks(optimizer=loraplus_optimizer(self.loraplus_lr_ratio)))


INITS = {"default": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora"}


def loraplus_optimizer(ratio: float):
    """An optimizer factory for TrainHooks: PEFT's LoRA+ groups, AdamW with the Trainer's settings."""

    def build(model: torch.nn.Module, args) -> torch.optim.Optimizer:
        from peft.optimizers import create_loraplus_optimizer

        return create_loraplus_optimizer(
            model, torch.optim.AdamW, lr=args.learning_rate, loraplus_lr_ratio=ratio,
            loraplus_weight_decay=args.weight_decay, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
        )

    return build


def convert_on_save(model) -> None:
    """Make `model.save_pretrained` write PiSSA/OLoRA as a plain LoRA adapter on the original weights.

    PEFT's own `path_initial_model_for_weight_conversion` does the same arithmetic but keeps only the
    lora_A/lora_B tensors (the trained head and DoRA magnitudes would be lost), so it is done here on
    the full state dict: A' = [A ; A0] (2r, in), B' = [B | -B0] (out, 2r), r and alpha doubled.
    Installed on the instance, so every caller (head read-out or LM read-out) saves the converted form.
    """
    if next(model.parameters()).device.type == "meta":
        return  # the architecture check: nothing will be saved
    initial = {n: p.detach().clone() for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n}
    plain_save = model.save_pretrained

    def save_pretrained(directory, **kwargs):
        state = model.state_dict()
        for name, start in initial.items():
            state[name] = torch.cat([state[name], start], 0) if ".lora_A." in name else torch.cat([state[name], -start], 1)
        config = model.peft_config[model.active_adapter]
        kept = (config.r, config.lora_alpha, config.init_lora_weights)
        config.r, config.init_lora_weights = 2 * config.r, True
        config.lora_alpha *= 2 ** 0.5 if config.use_rslora else 2  # same scaling alpha/r (alpha/sqrt(r) with rsLoRA)
        try:
            plain_save(directory, state_dict=state, **kwargs)
        finally:
            config.r, config.lora_alpha, config.init_lora_weights = kept

    model.save_pretrained = save_pretrained


@register("lora", "low-rank updates of chosen linear layers + the head (PEFT LoRA); export merges them",
          family="parameter-efficient")
class LoraStrategy(PeftStrategy):
    Settings = LoraSettings
    mergeable = True
