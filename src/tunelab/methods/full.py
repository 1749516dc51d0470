"""`full`: every parameter trains; the artifact is the whole fine-tuned model (safetensors).
The classification read-out with the `full` model change (`tunelab.model_changes.full`)."""

from tunelab.methods.classifier import ClassifierStrategy
from tunelab.methods.registry import register
from tunelab.model_changes.full import MODEL_DIR  # noqa: F401 (re-exported: artifact name)


@register("full", "all parameters train (standard fine-tuning); saves the whole model")
class FullStrategy(ClassifierStrategy):
    change_name = "full"
