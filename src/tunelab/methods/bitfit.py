"""`bitfit` (Ben Zaken et al. 2022): only the bias terms train, plus the new classification head.
The classification read-out with the `bitfit` model change (`tunelab.model_changes.bitfit`).

Llama-style models have no biases in their linear layers; there BitFit trains the head only (and
says so in the run's costs: the trainable count shows it), unless `add_biases: true` gives its
linear layers zero-initialised biases to train.
"""

from tunelab.methods.classifier import ClassifierStrategy
from tunelab.methods.registry import register
from tunelab.model_changes.bitfit import BitFitSettings


@register("bitfit", "only bias terms train, plus the classification head (BitFit)")
class BitFitStrategy(ClassifierStrategy):
    Settings = BitFitSettings
    change_name = "bitfit"
