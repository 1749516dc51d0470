"""`ia3` (Liu et al. 2022, (IA)^3) via PEFT: learned vectors rescale the keys, values and the
feed-forward activations (initialised to ones, so training starts at the base model); the
classification head trains alongside. Mergeable into the base weights by `tunelab export`."""

from __future__ import annotations

from tunelab.methods.peft_common import PeftStrategy
from tunelab.methods.registry import register
from tunelab.model_changes.peft_common import SettingsError
from tunelab.settings import StrictSettings


class IA3Settings(StrictSettings):
    target_modules: list[str] | None = None
    """Layers whose activations are rescaled, by name suffix. Default: PEFT's table per architecture
    (key, value and the feed-forward output, e.g. [k_proj, v_proj, down_proj] for Llama)."""
    feedforward_modules: list[str] | None = None
    """Those of target_modules that are feed-forward layers (their *input* is rescaled). Default: PEFT's table."""

    def peft_config(self, model_config, task_type: str, tokenizer_path: str | None = None):
        from peft import IA3Config
        from peft.utils import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD
        from peft.utils import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS

        model_type = getattr(model_config, "model_type", None)
        targets = self.target_modules or TARGETS.get(model_type)
        if not targets:
            raise SettingsError("target_modules", f"no default IA3 target modules for model_type {model_type!r}; "
                                "set strategy.target_modules and strategy.feedforward_modules")
        feedforward = self.feedforward_modules
        if feedforward is None:
            # PEFT's feed-forward defaults, kept to those among the chosen targets.
            feedforward = [m for m in FEEDFORWARD.get(model_type, []) if m in targets]
        if not set(feedforward) <= set(targets):  # checked here: IA3Config raises a bare ValueError for it
            raise SettingsError("feedforward_modules", f"{sorted(set(feedforward) - set(targets))} must also be in target_modules")
        return IA3Config(task_type=task_type, target_modules=list(targets), feedforward_modules=list(feedforward))


@register("ia3", "learned rescaling vectors on keys, values and feed-forward activations + the head (PEFT IA3)",
          family="parameter-efficient")
class IA3Strategy(PeftStrategy):
    Settings = IA3Settings
    mergeable = True
