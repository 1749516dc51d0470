"""Any PEFT strategy as a model change (`train: lora`, `ia3`, `prompt_tuning`, ...), with that
strategy's own settings schema (`peft_config(model_config, task_type, tokenizer_path)`); applied by
`peft_common.apply_peft`, so no PEFT method is written twice.

Artifact: `<run_dir>/adapter/`, a standard PEFT adapter directory (`adapter_config.json` +
`adapter_model.safetensors`) that plain `peft.PeftModel.from_pretrained(base, "<run_dir>/adapter")`
loads; under a `head` read-out the new head is in it too (`modules_to_save`).
"""

from __future__ import annotations

from pathlib import Path

from tunelab.artifacts import reading_weights, require_artifact
from tunelab.errors import ConfigError
from tunelab.model_changes.adapter import ADAPTER_DIR  # one name for both adapter formats
# PEFT's soft-prompt types (`peft.PeftType` values): virtual tokens or per-layer prefixes.
SOFT_PROMPT_TYPES = ("PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING")


class PeftChange:
    """Not registered by name: `registry.register_peft` makes one per PEFT strategy."""

    def __init__(self, settings_class):
        self.Settings = settings_class

    def check(self, settings, target) -> None:
        from tunelab.model_changes.peft_common import apply_peft, located
        from tunelab.models import resolve_model_path

        tokenizer_path = resolve_model_path(target.experiment.model.name) if target.readout == "head" else None
        try:
            apply_peft(target.skeleton(), settings, target.task_type, max_length=target.max_length,
                       tokenizer_path=tokenizer_path)
        except ConfigError as err:
            raise located(err, target.experiment) from None

    def apply(self, loaded, settings, target):
        from tunelab.model_changes.peft_common import apply_peft, fit_padding, new_modules

        head = target.readout == "head"
        model = apply_peft(loaded.model, settings, target.task_type, max_length=target.max_length,
                           tokenizer_path=loaded.path, modules_to_save=new_modules(loaded.missing_keys) if head else None)
        if head:
            fit_padding(loaded.tokenizer, model)
        return model

    def save(self, model, directory: Path, loaded, settings) -> None:
        model.save_pretrained(Path(directory) / ADAPTER_DIR)

    def load(self, directory: Path, load_base, settings, target):
        from peft import PeftModel

        adapter_dir = require_artifact(Path(directory), f"{ADAPTER_DIR}/adapter_config.json").parent
        loaded = load_base(None)
        with reading_weights(adapter_dir.parent, adapter_dir / "adapter_model.safetensors"):
            model = PeftModel.from_pretrained(loaded.model, adapter_dir)
        if target.readout == "head":
            from tunelab.model_changes.peft_common import fit_padding

            fit_padding(loaded.tokenizer, model)
        return loaded, model


def is_soft_prompt(settings) -> bool:
    """Soft prompts (prompt, prefix, P-tuning) shift positions: some read-outs cannot take them.
    A settings class says its PEFT type in a `peft_type` class attribute (`PeftType` value)."""
    return getattr(type(settings), "peft_type", None) in SOFT_PROMPT_TYPES
