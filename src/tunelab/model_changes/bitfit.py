"""`bitfit` (Ben Zaken et al. 2022): only the bias terms train, plus the read-out's new head (if any).

Llama-style models have no biases in their linear layers. Under a classification head BitFit then
trains the head only (and says so in the run's costs: the trainable count shows it). With
`add_biases: true` every linear layer inside the transformer layers that lacks a bias gets one,
initialised to zero (the model computes exactly what it did) — the way to BitFit such a model,
and required under an LM read-out, where nothing else would train.

Artifact: `delta.safetensors` (delta.py); added biases are in it, and loading adds them again first.
"""

from __future__ import annotations

import torch

from tunelab.errors import ConfigError
from tunelab.model_changes.delta import DeltaChange
from tunelab.model_changes.registry import register
from tunelab.model_changes.selection import freeze_all, head_of, layer_index, unfreeze
from tunelab.settings import StrictSettings


class BitFitSettings(StrictSettings):
    add_biases: bool = False
    """Give every bias-less linear layer inside the transformer layers a zero bias to train (Llama-style models)."""


@register("bitfit", "only bias terms train (BitFit), plus a classification head if the read-out has one")
class BitFit(DeltaChange):
    Settings = BitFitSettings

    def check(self, settings: BitFitSettings, target) -> None:
        if target.readout == "lm" and not settings.add_biases:
            skeleton = target.skeleton()
            if not any(name.endswith(".bias") for name, _ in skeleton.named_parameters()):
                raise ConfigError(
                    f"{target.locate('add_biases')}: {type(skeleton).__name__} has no bias terms, so train: bitfit "
                    f"would train nothing; set {target.key('add_biases')}: true to give its linear layers "
                    "zero-initialised biases to train")

    def apply(self, loaded, settings: BitFitSettings, target):
        if settings.add_biases:
            add_zero_biases(loaded.model)
        head = head_of(loaded, target)
        freeze_all(loaded.model)
        unfreeze(loaded.model, lambda name: name.endswith(".bias") or head(name))
        return loaded.model


def add_zero_biases(model: torch.nn.Module) -> list[str]:
    """A zero bias for every bias-less nn.Linear inside the layer stack; returns their module names."""
    added = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module.bias is None and layer_index(name + ".") is not None:
            weight = module.weight
            module.bias = torch.nn.Parameter(torch.zeros(module.out_features, dtype=weight.dtype, device=weight.device))
            added.append(name)
    return added
