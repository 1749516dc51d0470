"""`lm_head`: only the module holding the output embedding trains (Llama: `lm_head`, BERT: `cls`).
With tied embeddings (SmolLM2) that matrix is also the input embedding. Only an LM read-out uses
an LM head. Artifact: `delta.safetensors` (delta.py) with the trained tensors."""

import torch

from tunelab.errors import ConfigError
from tunelab.model_changes.delta import DeltaChange
from tunelab.model_changes.registry import register


@register("lm_head", "only the LM head (output embedding) trains", readouts=("lm",))
class LmHead(DeltaChange):
    def apply(self, loaded, settings, target):
        model = loaded.model
        model.requires_grad_(False)
        lm_head_module(model).requires_grad_(True)
        return model


def lm_head_module(model) -> torch.nn.Module:
    """The top-level module that holds the output embedding (Llama: `lm_head`; BERT: `cls`)."""
    head = model.get_output_embeddings()
    for name, module in model.named_modules():
        if module is head:
            return model.get_submodule(name.split(".")[0])
    raise ConfigError(f"{type(model).__name__} exposes no output embedding; train: lm_head cannot find its LM head")
