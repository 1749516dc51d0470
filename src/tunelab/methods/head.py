"""`head`: a linear probe — only a new classification head trains; the encoder stays frozen."""

from tunelab.methods.classifier import ClassifierStrategy
from tunelab.methods.registry import register
from tunelab.methods.selection import freeze_all, is_head, unfreeze


@register("head", "only a new classification head trains (linear probe); the pretrained model stays frozen")
class HeadStrategy(ClassifierStrategy):
    def prepare(self, loaded):
        freeze_all(loaded.model)
        unfreeze(loaded.model, lambda name: is_head(name, loaded.missing_keys))
        return loaded.model
