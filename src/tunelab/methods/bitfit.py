"""`bitfit` (Ben Zaken et al. 2022): only the bias terms train, plus the new classification head.

Llama-style models have no biases in their linear layers; there BitFit trains the head only (and
says so in the run's costs: the trainable count shows it).
"""

from tunelab.methods.classifier import ClassifierStrategy
from tunelab.methods.registry import register
from tunelab.methods.selection import freeze_all, is_head, unfreeze


@register("bitfit", "only bias terms train, plus the classification head (BitFit)")
class BitFitStrategy(ClassifierStrategy):
    def prepare(self, loaded):
        freeze_all(loaded.model)
        unfreeze(loaded.model, lambda name: name.endswith(".bias") or is_head(name, loaded.missing_keys))
        return loaded.model
