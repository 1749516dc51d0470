"""The classification-head strategies built on Hugging Face PEFT (lora, ia3, vera, oft, adalora,
ln_tuning, prompt/prefix/P-tuning): each only sets its `Settings`. Wrapping, the settings checks and
the adapter directory are the PEFT model change's (`tunelab.model_changes.peft_common`).
"""

from __future__ import annotations

from pathlib import Path

from tunelab.errors import ConfigError
from tunelab.methods.classifier import ClassifierStrategy
from tunelab.model_changes.peft_common import ADAPTER_DIR, apply_peft, fit_padding, located, new_modules, skeleton


# ---------------------------------------------------------------------------------------------
# The strategy


class PeftStrategy(ClassifierStrategy):
    """Classification-head strategy whose model is a PEFT model; subclasses only set `Settings`."""

    mergeable = False
    """Whether `tunelab export` can fold the learned delta into the base weights (LoRA, IA3)."""

    def check(self) -> None:
        super().check()
        from tunelab.models import resolve_model_path

        target = self.target()
        model = skeleton(self.experiment, len(self.label_names), target.architecture)
        try:
            apply_peft(model, self.settings, target.task_type, max_length=self.experiment.model.max_length,
                       tokenizer_path=resolve_model_path(self.experiment.model.name))
        except ConfigError as err:
            raise located(err, self.experiment) from None

    def prepare(self, loaded):
        model = apply_peft(loaded.model, self.settings, self.target().task_type, max_length=self.experiment.model.max_length,
                           tokenizer_path=loaded.path, modules_to_save=new_modules(loaded.missing_keys))
        fit_padding(loaded.tokenizer, model)
        return model

    def save_artifact(self, model, directory: Path, loaded) -> None:
        model.save_pretrained(directory / ADAPTER_DIR)

    def load(self, run_dir: Path):
        from peft import PeftModel

        from tunelab.artifacts import reading_weights, require_artifact

        adapter_dir = require_artifact(run_dir, f"{ADAPTER_DIR}/adapter_config.json").parent
        loaded = self.load_base()
        with reading_weights(adapter_dir.parent, adapter_dir / "adapter_model.safetensors"):
            model = PeftModel.from_pretrained(loaded.model, adapter_dir)
        fit_padding(loaded.tokenizer, model)
        return self.predictor(model, loaded)
