"""What trains in a language model that keeps its LM head (`pet`, `sft`): the `train:` choice.

- ``full``: every weight; the artifact is the whole model directory.
- ``lm_head``: only the module holding the output embedding (Llama: `lm_head`, BERT: `cls`). With
  tied embeddings (SmolLM2) that matrix is also the input embedding. Artifact: the trained tensors.
- a PEFT strategy's name (``lora``, ``ia3``, ``prompt_tuning``, ...): that method, with its settings
  under ``delta:`` checked by the strategy's own schema, applied by `peft_common.apply_peft`.
  Artifact: a standard PEFT adapter directory.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tunelab.artifacts import require_artifact
from tunelab.config import validate_settings
from tunelab.errors import ConfigError, UserError
from tunelab.methods.classifier import DELTA_FILE
from tunelab.methods.prompting import where
from tunelab.methods.registry import get_strategy

MODEL_DIR, ADAPTER_DIR = "model", "adapter"
BUILT_IN = ("full", "lm_head")
SOFT_PROMPTS = ("Prompt", "Prefix", "PTuning", "Ptuning")  # settings classes of the soft-prompt methods


def delta_settings(experiment, mode: str, options: dict, strategy: str):
    """The PEFT settings object for `train: <peft method>` (None for full / lm_head); errors name file+line."""
    if mode in BUILT_IN:
        if options:
            raise ConfigError(f"{where(experiment, 'strategy', 'delta')}strategy.delta is for PEFT methods; "
                              f"train: {mode} takes no settings")
        return None
    try:
        info = get_strategy(mode)
    except ConfigError as err:
        raise ConfigError(f"{where(experiment, 'strategy', 'train')}strategy.train: {err}") from None
    if not hasattr(info.cls.Settings, "peft_config"):
        raise ConfigError(f"{where(experiment, 'strategy', 'train')}strategy.train of '{strategy}' must be full, lm_head "
                          f"or a PEFT method (lora, ia3, prompt_tuning, prefix_tuning, ptuning, ...), not '{mode}'")
    return validate_settings(info.cls.Settings, options, ("strategy", "delta"), experiment.source, experiment.lines)


def is_soft_prompt(delta) -> bool:
    return delta is not None and type(delta).__name__.startswith(SOFT_PROMPTS)


def check_delta(experiment, delta, head: str, task_type: str | None) -> None:
    """Apply the PEFT method to the architecture on the meta device (no weights read) to catch bad settings."""
    from tunelab.methods.peft_common import apply_peft, located, skeleton

    if delta is None:
        return
    try:
        apply_peft(skeleton(experiment, 2, head), delta, task_type, max_length=experiment.model.max_length)
    except ConfigError as err:
        raise located(err, experiment) from None


def make_trainable(loaded, mode: str, delta, task_type: str | None, max_length: int) -> torch.nn.Module:
    """Freeze / unfreeze / wrap `loaded.model` for `train: mode`; returns the LM to train."""
    model = loaded.model
    if mode == "full":
        return model.requires_grad_(True)
    if mode == "lm_head":
        model.requires_grad_(False)
        lm_head_module(model).requires_grad_(True)
        return model
    from tunelab.methods.peft_common import apply_peft

    return apply_peft(model, delta, task_type, max_length=max_length, tokenizer_path=loaded.path)


def lm_head_module(model) -> torch.nn.Module:
    """The top-level module that holds the output embedding (Llama: `lm_head`; BERT: `cls`)."""
    head = model.get_output_embeddings()
    for name, module in model.named_modules():
        if module is head:
            return model.get_submodule(name.split(".")[0])
    raise ConfigError(f"{type(model).__name__} exposes no output embedding; train: lm_head cannot find its LM head")


def save_lm(lm: torch.nn.Module, mode: str, directory: Path, loaded) -> None:
    directory = Path(directory)
    if mode == "full":
        lm.save_pretrained(directory / MODEL_DIR, safe_serialization=True)
        loaded.tokenizer.save_pretrained(directory / MODEL_DIR)
    elif mode == "lm_head":
        from safetensors.torch import save_file

        state = {n: p.detach().cpu().contiguous() for n, p in lm.named_parameters() if p.requires_grad}
        save_file(state, str(directory / DELTA_FILE), metadata={"format": "tunelab-delta", "base": loaded.path})
    else:
        lm.save_pretrained(directory / ADAPTER_DIR)


def load_lm(run_dir: Path, load_base):
    """(loaded, lm) from a run directory; `load_base(name=None)` loads the base model or a model directory."""
    run_dir = Path(run_dir)
    require_artifact(run_dir, f"{MODEL_DIR}/", f"{ADAPTER_DIR}/", DELTA_FILE)  # before the base weights load
    if (run_dir / MODEL_DIR).is_dir():
        loaded = load_base(str(run_dir / MODEL_DIR))
        return loaded, loaded.model
    loaded = load_base(None)
    if (run_dir / ADAPTER_DIR).is_dir():
        from peft import PeftModel

        return loaded, PeftModel.from_pretrained(loaded.model, run_dir / ADAPTER_DIR)
    if (run_dir / DELTA_FILE).is_file():
        from safetensors.torch import load_file

        state = load_file(str(run_dir / DELTA_FILE), device=str(next(loaded.model.parameters()).device))
        loaded.model.load_state_dict(state, strict=False)
        return loaded, loaded.model
    raise UserError(f"{run_dir} holds no trained model ({MODEL_DIR}/, {ADAPTER_DIR}/ or {DELTA_FILE})")
