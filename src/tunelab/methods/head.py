"""`head`: a linear probe — only a new classification head trains; the encoder stays frozen.
The classification read-out with the `head` model change (`tunelab.model_changes.head`)."""

from tunelab.methods.classifier import ClassifierStrategy
from tunelab.methods.registry import register


@register("head", "only a new classification head trains (linear probe); the pretrained model stays frozen")
class HeadStrategy(ClassifierStrategy):
    change_name = "head"
