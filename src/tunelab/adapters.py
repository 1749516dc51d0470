"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020), which PEFT does not offer.

An adapter is a small residual MLP inserted after a sublayer's output projection:

    adapter(h) = h + W_up · act(W_down · h + b_down) + b_up      # h: (B, T, hidden), W_down: (b, hidden)

with b = max(1, hidden // reduction_factor). ``W_up`` and ``b_up`` start at zero, so a freshly
adapted model computes exactly what the base model computes.

Placement, per transformer layer:
  * ``houlsby``:  after the attention output projection and after the feed-forward block (2 per layer);
  * ``pfeiffer``: after the feed-forward block only (1 per layer).
For BERT-style encoders the targets are ``attention.output.dense`` and ``output.dense`` (the adapter
sits before the residual LayerNorm, as in the papers); for Llama-style decoders ``self_attn.o_proj``
and ``mlp.down_proj``. Layers are found by these attribute paths, not by class names, so models
with the same layout (e.g. other Llama-like decoders) work too.

Injection: the adapter becomes a child module named ``adapter`` of the target ``nn.Linear`` and a
forward hook applies it to the Linear's output. Why not a wrapper module: the base model's
state_dict keys stay unchanged (base checkpoints still load, other methods such as LoRA still find
an ``nn.Linear``), while the adapter still follows ``state_dict``, ``model.to()``, ``deepcopy``
and the optimizer like any submodule.

On-disk format (a directory):
  * ``adapter_model.safetensors``: every adapter tensor plus every other trainable parameter (after
    ``mark_only_adapters_trainable`` that is the task head), keyed exactly as in
    ``model.state_dict()``, e.g. ``bert.encoder.layer.0.output.dense.adapter.down.weight``.
  * ``adapter_config.json``: ``{"format": "tunelab-bottleneck-adapters", "format_version": 1,
    "settings": {AdapterSettings fields}, "adapter_modules": [names returned by inject_adapters]}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import nn

from tunelab.settings import StrictSettings

FORMAT = "tunelab-bottleneck-adapters"
FORMAT_VERSION = 1
WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"

# Layer layouts we know: name -> (attention output projection, feed-forward output projection),
# both as attribute paths relative to one transformer layer.
LAYOUTS: dict[str, tuple[str, str]] = {
    "BERT-style encoder": ("attention.output.dense", "output.dense"),
    "Llama-style decoder": ("self_attn.o_proj", "mlp.down_proj"),
}

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class AdapterSettings(StrictSettings):
    """How bottleneck adapters are shaped and where they go."""

    kind: Literal["houlsby", "pfeiffer"] = "pfeiffer"
    """houlsby: adapters after attention and feed-forward; pfeiffer: after feed-forward only."""
    reduction_factor: int = Field(16, ge=1)
    """Bottleneck width is hidden_size // reduction_factor (at least 1)."""
    non_linearity: Literal["relu", "gelu", "silu", "tanh"] = "relu"
    """Activation between the down- and up-projection."""
    init_scale: float = Field(1e-2, ge=0.0)
    """Std of the normal init of the down-projection; the up-projection starts at zero (identity)."""


class Bottleneck(nn.Module):
    """h + up(act(down(h))); identity at init because ``up`` is zero."""

    def __init__(self, hidden: int, bottleneck: int, non_linearity: str = "relu", init_scale: float = 1e-2):
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)
        self.act = _ACTIVATIONS[non_linearity]()
        self.up = nn.Linear(bottleneck, hidden)
        nn.init.normal_(self.down.weight, std=init_scale)
        nn.init.zeros_(self.down.bias)
        # Zero up-projection: the adapted model starts exactly at the pretrained function.
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # h: (..., hidden)
        return h + self.up(self.act(self.down(h)))  # (..., b) inside, (..., hidden) out


def _apply_adapter(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    # Module-level (not a lambda) so models with adapters still pickle and deepcopy.
    return module.adapter(output)


def _find_targets(model: nn.Module) -> list[tuple[str, str]]:
    """(layer name, target path) for every layer whose layout we know, in model order."""
    targets = []
    for name, module in model.named_modules():
        for attn_path, ffn_path in LAYOUTS.values():
            if all(isinstance(_get(module, p), nn.Linear) for p in (attn_path, ffn_path)):
                targets.append((name, attn_path))
                targets.append((name, ffn_path))
    return targets


def _get(module: nn.Module, path: str) -> nn.Module | None:
    try:
        return module.get_submodule(path)
    except AttributeError:
        return None


def _unsupported(model: nn.Module) -> ValueError:
    model_type = getattr(getattr(model, "config", None), "model_type", "unknown")
    supported = "; ".join(f"{k} (layers with {a} and {f})" for k, (a, f) in LAYOUTS.items())
    return ValueError(
        f"Bottleneck adapters do not support {type(model).__name__} (model_type={model_type!r}): "
        f"no transformer layer with a known layout was found. Supported: {supported}."
    )


def inject_adapters(model: nn.Module, settings: AdapterSettings) -> list[str]:
    """Insert adapters in place; returns the adapter module names (as in ``model.named_modules()``)."""
    targets = _find_targets(model)
    if not targets:
        raise _unsupported(model)
    names = []
    for layer_name, path in targets:
        is_attention = path in {attn for attn, _ in LAYOUTS.values()}
        if settings.kind == "pfeiffer" and is_attention:
            continue
        full = f"{layer_name}.{path}" if layer_name else path
        linear = model.get_submodule(full)
        if hasattr(linear, "adapter"):
            raise ValueError(f"{full} already has an adapter; inject_adapters was called twice")
        hidden = linear.out_features
        width = max(1, hidden // settings.reduction_factor)
        adapter = Bottleneck(hidden, width, settings.non_linearity, settings.init_scale)
        linear.add_module("adapter", adapter.to(linear.weight.device, linear.weight.dtype))
        linear.register_forward_hook(_apply_adapter)
        names.append(f"{full}.adapter")
    return names


def _adapter_param_names(model: nn.Module) -> list[str]:
    names = []
    for mod_name, module in model.named_modules():
        if isinstance(module, Bottleneck):
            names += [f"{mod_name}.{p}" for p, _ in module.named_parameters()]
    return names


def _matches(name: str, pattern: str) -> bool:
    # Whole dotted components only: "score" matches "score.weight", not "attention_scores".
    return f".{pattern}." in f".{name}."


def mark_only_adapters_trainable(
    model: nn.Module, extra_trainable_patterns: tuple[str, ...] = ("classifier", "score")
) -> list[str]:
    """Freeze all but adapters and parameters matching a pattern (the task head); returns trainable names."""
    adapter_names = set(_adapter_param_names(model))
    if not adapter_names:
        raise ValueError("the model has no adapters: call inject_adapters(model, settings) first")
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad = name in adapter_names or any(_matches(name, p) for p in extra_trainable_patterns)
        if param.requires_grad:
            trainable.append(name)
    return trainable


def save_adapters(model: nn.Module, directory: str | Path, settings: AdapterSettings) -> Path:
    """Write adapter + trainable-head weights and the config (format in the module docstring)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    keep = set(_adapter_param_names(model)) | {n for n, p in model.named_parameters() if p.requires_grad}
    # clone: safetensors refuses tensors that share storage (tied weights) or are non-contiguous.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items() if k in keep}
    save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": FORMAT})
    modules = [name for name, m in model.named_modules() if isinstance(m, Bottleneck)]
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "settings": settings.model_dump(),
              "adapter_modules": modules}
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return directory


def load_adapters(base_model: nn.Module, directory: str | Path) -> nn.Module:
    """Inject adapters per the saved config into ``base_model`` (in place), load weights, return it."""
    directory = Path(directory)
    config = json.loads((directory / CONFIG_NAME).read_text())
    if config.get("format") != FORMAT or config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{directory / CONFIG_NAME}: not a {FORMAT} v{FORMAT_VERSION} config")
    settings = AdapterSettings.model_validate(config["settings"])
    names = inject_adapters(base_model, settings)
    if names != config["adapter_modules"]:
        raise ValueError(
            f"{directory}: saved adapters {config['adapter_modules'][:3]}... do not match the ones "
            f"injected into {type(base_model).__name__} {names[:3]}...: different architecture?"
        )
    tensors = load_file(str(directory / WEIGHTS_NAME))
    _check_keys(base_model, tensors, directory)
    base_model.load_state_dict(tensors, strict=False)  # shapes are still checked by torch
    return base_model


def _check_keys(model: nn.Module, tensors: dict[str, torch.Tensor], directory: Path) -> None:
    unknown = sorted(set(tensors) - set(model.state_dict()))
    missing = sorted(set(_adapter_param_names(model)) - set(tensors))
    if unknown or missing:
        raise ValueError(
            f"{directory / WEIGHTS_NAME} does not fit {type(model).__name__}: "
            f"keys matching no module: {unknown[:5]}; adapter weights not in file: {missing[:5]}"
        )
