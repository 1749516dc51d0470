"""The artifact of the changes that train some of the base model's own weights (`head`, `bitfit`,
`partial`, `lm_head`, and new changes built on `DeltaChange`): only what differs from the base.

On disk: `<run_dir>/delta.safetensors`, every trainable parameter plus every newly initialised
weight (`loaded.missing_keys`, e.g. a classification head), keyed as in `model.state_dict()`;
metadata `{"format": "tunelab-delta", "base": <base model path>}`. Loading: the base model, the
change applied again (same trainable set), then `load_state_dict(strict=False)`; a key the model
lacks is an error.

A new change of this kind needs only `apply` (one level of inheritance)::

    @register("ln_only", "only LayerNorm weights train")
    class LayerNormOnly(DeltaChange):
        def apply(self, loaded, settings, target):
            freeze_all(loaded.model)
            unfreeze(loaded.model, lambda name: "norm" in name.lower() or head_of(loaded, target)(name))
            return loaded.model
"""

from __future__ import annotations

from pathlib import Path

import torch

from tunelab.artifacts import reading_weights, require_artifact
from tunelab.errors import ConfigError
from tunelab.settings import NoSettings

DELTA_FILE = "delta.safetensors"


class DeltaChange:
    """Base of the delta-saving changes: subclasses implement `apply` (and maybe `check`, `Settings`)."""

    Settings = NoSettings

    def check(self, settings, target) -> None:
        """Nothing to check before the weights load."""

    def apply(self, loaded, settings, target) -> torch.nn.Module:
        raise NotImplementedError

    def save(self, model: torch.nn.Module, directory: Path, loaded, settings) -> None:
        save_delta(model, Path(directory), loaded)

    def load(self, directory: Path, load_base, settings, target):
        require_artifact(directory, DELTA_FILE)  # before the base weights load
        loaded = load_base(None)
        model = self.apply(loaded, settings, target)
        return loaded, load_delta(model, Path(directory))


def save_delta(model: torch.nn.Module, directory: Path, loaded) -> None:
    from safetensors.torch import save_file

    keep = set(loaded.missing_keys) | {n for n, p in model.named_parameters() if p.requires_grad}
    # clone only where two kept keys share storage (tied weights), which safetensors refuses.
    seen: set[int] = set()
    state = {}
    for key, value in model.state_dict().items():
        if key in keep:
            tensor = value.detach().cpu().contiguous()
            state[key] = tensor.clone() if tensor.data_ptr() in seen else tensor
            seen.add(tensor.data_ptr())
    save_file(state, str(directory / DELTA_FILE), metadata={"format": "tunelab-delta", "base": loaded.path})


def load_delta(model: torch.nn.Module, directory: Path) -> torch.nn.Module:
    from safetensors.torch import load_file

    from tunelab.costs import model_device

    with reading_weights(directory, directory / DELTA_FILE):
        state = load_file(str(directory / DELTA_FILE), device=str(model_device(model)))
    unexpected = model.load_state_dict(state, strict=False).unexpected_keys
    if unexpected:
        raise ConfigError(f"{directory / DELTA_FILE} holds weights this model lacks: {unexpected[:5]}")
    return model
