"""`adapter`: bottleneck adapters (Houlsby et al. 2019 / Pfeiffer et al. 2020) inserted into a frozen
model, the classification head trained alongside. PEFT has no bottleneck adapters; they live in
`tunelab.adapters`, whose docstring documents the saved format (`<run_dir>/adapter/`:
`adapter_model.safetensors` + `adapter_config.json`)."""

from __future__ import annotations

from pathlib import Path

from tunelab.adapters import AdapterSettings, inject_adapters, load_adapters, mark_only_adapters_trainable, save_adapters
from tunelab.artifacts import require_artifact
from tunelab.errors import ConfigError, UserError
from tunelab.methods.classifier import HEAD_MODULES, ClassifierPredictor, ClassifierStrategy
from tunelab.methods.registry import register

ADAPTER_DIR = "adapter"


@register("adapter", "bottleneck adapters (Houlsby or Pfeiffer) in a frozen model + the head",
          family="parameter-efficient")
class AdapterStrategy(ClassifierStrategy):
    Settings = AdapterSettings

    def check(self) -> None:
        super().check()
        from tunelab.methods.peft_common import skeleton

        self.inject(skeleton(self.experiment, len(self.label_names)))

    def inject(self, model) -> list[str]:
        try:
            return inject_adapters(model, self.settings)
        except ValueError as err:  # an architecture without a known layer layout
            raise ConfigError(f"{self.experiment.source}: strategy 'adapter': {err}") from None

    def prepare(self, loaded):
        from tunelab.methods.peft_common import new_modules

        self.inject(loaded.model)
        mark_only_adapters_trainable(loaded.model, tuple(HEAD_MODULES) + tuple(new_modules(loaded.missing_keys)))
        return loaded.model

    def save_artifact(self, model, directory: Path, loaded) -> None:
        save_adapters(model, directory / ADAPTER_DIR, self.settings)

    def load(self, run_dir: Path):
        adapter_dir = require_artifact(run_dir, ADAPTER_DIR)
        loaded = self.load_base()
        try:
            model = load_adapters(loaded.model, adapter_dir)
        except ValueError as err:
            raise UserError(f"cannot load the adapters of {run_dir}: {err}") from None
        return ClassifierPredictor(self, model, loaded)
