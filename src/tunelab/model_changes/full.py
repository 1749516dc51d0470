"""`full`: every parameter trains (standard fine-tuning).

Artifact: `<run_dir>/model/`, the whole fine-tuned model (`save_pretrained`, safetensors) with its
tokenizer; it loads as a plain model directory, without the base model.
"""

from pathlib import Path

from tunelab.artifacts import require_artifact
from tunelab.model_changes.registry import register
from tunelab.settings import NoSettings

MODEL_DIR = "model"


@register("full", "all parameters train (standard fine-tuning); saves the whole model")
class Full:
    Settings = NoSettings

    def check(self, settings, target) -> None:
        """Nothing to check before the weights load."""

    def apply(self, loaded, settings, target):
        for param in loaded.model.parameters():
            param.requires_grad_(True)
        return loaded.model

    def save(self, model, directory: Path, loaded, settings) -> None:
        model.save_pretrained(Path(directory) / MODEL_DIR, safe_serialization=True)
        loaded.tokenizer.save_pretrained(Path(directory) / MODEL_DIR)

    def load(self, directory: Path, load_base, settings, target):
        loaded = load_base(str(require_artifact(Path(directory), MODEL_DIR)))
        return loaded, loaded.model
