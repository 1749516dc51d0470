"""`adalora` (Zhang et al. 2023, AdaLoRA) via PEFT: LoRA in SVD form, ΔW = B·diag(E)·A, starting at
rank `init_r` per layer; during training the singular values E of the least important triplets are
pruned until the total budget is `target_r` per layer on average, so layers that matter keep more
rank. An orthogonality penalty on A, B is added to the loss (by PEFT's model, when it computes the
loss itself: the classification head read-out; a template read-out computes its own loss without it).

Schedule (PEFT's): `tinit` warm-up steps at full rank, then the budget falls (cubically) to the
target until `total_step - tfinal`, then the final ranks are fixed. PEFT needs `total_step` up front;
tunelab only knows it when training starts, so the fractions below are turned into steps then and
`update_and_allocate(step)` runs after every optimiser step (a Trainer callback attached to the
model, `tunelab.train.TrainHooks`). After the best dev state is restored, the final rank pattern is
applied again, so the weights in memory match what the saved adapter (pruned to that pattern) reloads.

Artifact: `<run_dir>/adapter/`, a PEFT adapter whose config records the rank pattern.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from tunelab.methods.peft_common import PeftStrategy
from tunelab.methods.registry import register
from tunelab.model_changes.peft_common import table_targets
from tunelab.settings import StrictSettings


class AdaLoraSettings(StrictSettings):
    init_r: int = Field(12, ge=1)
    """Starting rank of every adapted layer."""
    target_r: int = Field(8, ge=1)
    """Average rank per layer once the budget is allocated."""
    alpha: float = Field(8.0, gt=0)
    """Scaling of the update (alpha / current rank)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the update's input."""
    target_modules: list[str] | None = None
    """Linear layers to adapt, by name suffix. Default: PEFT's table (query/value, q_proj/v_proj)."""
    tinit: float = Field(0.1, ge=0, lt=1)
    """Fraction of the training steps spent at full rank before pruning starts."""
    tfinal: float = Field(0.2, ge=0, lt=1)
    """Fraction of the training steps at the end with the final ranks fixed (at least one step)."""
    delta_t: int = Field(1, ge=1)
    """Steps between two budget re-allocations."""
    beta1: float = Field(0.85, gt=0, lt=1)
    """EMA factor of the importance scores."""
    beta2: float = Field(0.85, gt=0, lt=1)
    """EMA factor of their uncertainty."""
    orth_reg_weight: float = Field(0.5, ge=0)
    """Weight of the orthogonality penalty ||AᵀA - I||² + ||BBᵀ - I||²."""

    @model_validator(mode="after")
    def _schedule_fits(self):
        if self.target_r > self.init_r:
            raise ValueError(f"target_r ({self.target_r}) cannot exceed init_r ({self.init_r})")
        if self.tinit + self.tfinal >= 1:
            raise ValueError(f"tinit + tfinal = {self.tinit + self.tfinal:g} leaves no steps for the budget schedule (must be < 1)")
        return self

    def peft_config(self, model_config, task_type: str, tokenizer_path: str | None = None):
        from peft import AdaLoraConfig
        from peft.utils import TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING as TABLE

        return AdaLoraConfig(
            task_type=task_type, init_r=self.init_r, target_r=self.target_r, lora_alpha=self.alpha,
            lora_dropout=self.dropout, deltaT=self.delta_t, beta1=self.beta1, beta2=self.beta2,
            orth_reg_weight=self.orth_reg_weight, tinit=0, tfinal=0,
            total_step=1,  # a placeholder PEFT insists on; the real count is set when training starts
            target_modules=self.target_modules or table_targets(TABLE, model_config, "AdaLoRA"),
        )

    def on_wrapped(self, model) -> None:
        from tunelab.train import TrainHooks, attach_hooks

        attach_hooks(model, TrainHooks(callbacks=[rank_schedule(model, self)], finish=lambda _: apply_final_pattern(model)))


def rank_schedule(model, settings: AdaLoraSettings):
    """A TrainerCallback running AdaLoRA's budget schedule on `model` (a PeftModel)."""
    from transformers import TrainerCallback

    class AdaLoraSchedule(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            total = state.max_steps
            config = model.peft_config[model.active_adapter]
            # PEFT fixes the final ranks at step total - tfinal; the steps seen are 0 … total-1, so tfinal
            # needs at least one step or the last allocation never happens (the budget stops short of target_r).
            tfinal = max(1, int(settings.tfinal * total))
            tinit = min(int(settings.tinit * total), total - tfinal)
            for cfg in {id(c): c for c in (config, model.base_model.rankallocator.peft_config)}.values():
                cfg.total_step, cfg.tinit, cfg.tfinal = total, tinit, tfinal

        def on_optimizer_step(self, args, state, control, **kwargs):
            # After optimizer.step(), before zero_grad: the importance scores read the gradients.
            model.base_model.update_and_allocate(state.global_step)

    return AdaLoraSchedule()


def apply_final_pattern(model) -> None:
    pattern = model.peft_config[model.active_adapter].rank_pattern
    if pattern:
        model.base_model.rankallocator.mask_using_rank_pattern(model.base_model.model, pattern)


@register("adalora", "LoRA in SVD form whose rank budget is re-allocated to the layers that matter + the head (PEFT AdaLoRA)",
          family="parameter-efficient")
class AdaLoraStrategy(PeftStrategy):
    Settings = AdaLoraSettings
