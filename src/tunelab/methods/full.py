"""`full`: every parameter trains; the artifact is the whole fine-tuned model (safetensors)."""

from pathlib import Path

from tunelab.artifacts import require_artifact
from tunelab.methods.classifier import ClassifierStrategy
from tunelab.methods.registry import register
from tunelab.models import load_model

MODEL_DIR = "model"


@register("full", "all parameters train (standard fine-tuning); saves the whole model")
class FullStrategy(ClassifierStrategy):
    def prepare(self, loaded):
        for param in loaded.model.parameters():
            param.requires_grad_(True)
        return loaded.model

    def save_artifact(self, model, directory: Path, loaded) -> None:
        model.save_pretrained(directory / MODEL_DIR, safe_serialization=True)
        loaded.tokenizer.save_pretrained(directory / MODEL_DIR)

    def load(self, run_dir: Path):
        from tunelab.methods.classifier import ClassifierPredictor

        cfg = self.experiment.model
        loaded = load_model(str(require_artifact(run_dir, MODEL_DIR)), "classification", len(self.label_names),
                            device=cfg.device, dtype=cfg.dtype, label_names=self.label_names, pooling=cfg.pooling)
        return ClassifierPredictor(self, loaded.model, loaded)
