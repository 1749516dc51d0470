"""`adapter`: bottleneck adapters (Houlsby et al. 2019 / Pfeiffer et al. 2020) inserted into a frozen
model, a classification head (under a `head` read-out) trained alongside. They work in BERT and
Llama layers whatever the model's head: a classifier, a masked LM or a causal LM (`tunelab.adapters`).

Artifact: `<run_dir>/adapter/` as `tunelab.adapters` documents it: `adapter_model.safetensors`
(adapter weights + other trainable weights, i.e. the head) and `adapter_config.json`
(`{"format": "tunelab-bottleneck-adapters", "format_version": 1, "settings", "adapter_modules"}`).
"""

from __future__ import annotations

from pathlib import Path

from tunelab.adapters import (WEIGHTS_NAME, AdapterSettings, inject_adapters, load_adapters, mark_only_adapters_trainable,
                              save_adapters)
from tunelab.artifacts import reading_weights, require_artifact
from tunelab.errors import ConfigError, UserError
from tunelab.model_changes.registry import register
from tunelab.model_changes.selection import HEAD_MODULES

ADAPTER_DIR = "adapter"


@register("adapter", "bottleneck adapters (Houlsby or Pfeiffer) in a frozen model")
class Adapter:
    Settings = AdapterSettings

    def check(self, settings: AdapterSettings, target) -> None:
        inject(target.skeleton(), settings, target)

    def apply(self, loaded, settings: AdapterSettings, target):
        inject(loaded.model, settings, target)
        mark_only_adapters_trainable(loaded.model, head_patterns(loaded, target))
        return loaded.model

    def save(self, model, directory: Path, loaded, settings: AdapterSettings) -> None:
        save_adapters(model, Path(directory) / ADAPTER_DIR, settings)

    def load(self, directory: Path, load_base, settings, target):
        adapter_dir = require_artifact(Path(directory), ADAPTER_DIR)
        loaded = load_base(None)
        try:
            with reading_weights(directory, adapter_dir / WEIGHTS_NAME):
                model = load_adapters(loaded.model, adapter_dir)
        except ValueError as err:
            raise UserError(f"cannot load the adapters of {directory}: {err}") from None
        return loaded, model


def head_patterns(loaded, target) -> tuple[str, ...]:
    """Module names that train beside the adapters: the classification head, nothing under an LM read-out."""
    if target.readout != "head":
        return ()
    return tuple(HEAD_MODULES) + tuple(sorted({key.rsplit(".", 1)[0] for key in loaded.missing_keys if "." in key}))


def inject(model, settings: AdapterSettings, target) -> list[str]:
    try:
        return inject_adapters(model, settings)
    except ValueError as err:  # an architecture without a known layer layout
        source = target.experiment.source if target.experiment is not None else "<config>"
        what = "strategy 'adapter'" if target.settings_key == ("strategy",) else "train: adapter"
        raise ConfigError(f"{source}: {what}: {err}") from None
