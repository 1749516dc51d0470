"""`partial`: freeze the embeddings and the lowest N layers, or train only the top k layers, or only
modules whose names match patterns. The classification head always trains. The classification
read-out with the `partial` model change (`tunelab.model_changes.partial`, which holds the rule)."""

from __future__ import annotations

from tunelab.methods.classifier import ClassifierStrategy
from tunelab.methods.registry import register
from tunelab.model_changes.partial import PartialSettings, first_trained_layer


@register("partial", "train the upper layers only: freeze embeddings + lowest N layers, top-k layers, or matching modules")
class PartialStrategy(ClassifierStrategy):
    Settings = PartialSettings
    change_name = "partial"

    def first_trained_layer(self, layers: int) -> int:
        return first_trained_layer(self.settings, layers, self.target())


__all__ = ["PartialSettings", "PartialStrategy"]
