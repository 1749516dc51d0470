"""Checks of `train.augment` that need no weights, run by `run.prepare` before anything loads:
the strategy trains, and the models it names exist and are of the right kind (their config.json)."""

from __future__ import annotations

import json
from pathlib import Path

from tunelab.errors import ConfigError, ModelError
from tunelab.training.adversarial import check_trains

LM_HEADS = ("CausalLM", "LMHeadModel")
"""Architecture names of models that continue text (LlamaForCausalLM, GPT2LMHeadModel, ...)."""


def check_augment_scope(config) -> None:
    """Multi-task and continual runs assemble each task's training split themselves, out of augmentation's
    reach: refused rather than silently ignored."""
    augment = config.train.augment
    which = next((k for k in ("multitask", "continual") if getattr(config, k, None) is not None), None)
    if augment is not None and which is not None:
        raise ConfigError(f"{config.locate('train', 'augment')}: train.augment applies to single-task runs, not to "
                          f"{which} runs; remove it (or compare the tasks one at a time)")


def check_augment(config, info) -> None:
    augment = config.train.augment
    if augment is None:
        return
    check_trains(info.cls, config.locate("train", "augment"), "train.augment")  # zero_shot, few_shot, ... train nothing
    if augment.method == "paraphrase":
        check_model_name(config, "model", augment.model, seq2seq=False)
    elif augment.method == "back_translation":
        check_model_name(config, "forward_model", augment.forward_model, seq2seq=True)
        check_model_name(config, "backward_model", augment.backward_model, seq2seq=True)


def check_model_name(config, key: str, name: str, seq2seq: bool) -> None:
    """An embedded name of the right kind, an existing model directory of the right kind, or a hub id
    (checked when it loads: offline, its error names the key too)."""
    from tunelab.models import EMBEDDED, check_model_dir

    place = f"{config.locate('train', 'augment', key)}: train.augment.{key}"
    wanted = "a translation (sequence-to-sequence) model" if seq2seq else "a causal LM (decoder)"
    if name in EMBEDDED:
        if seq2seq or EMBEDDED[name].architecture != "decoder":
            raise ConfigError(f"{place}: embedded model '{name}' is not {wanted}; give "
                              f"{'a local directory or hub id of one' if seq2seq else 'smollm2-135m or another decoder'}")
        return
    path = Path(name).expanduser()
    if not path.is_dir():
        if name.startswith((".", "/", "~")) or path.exists():
            raise ConfigError(f"{place}: model directory not found: {name}")
        return  # a hub id
    try:
        check_model_dir(path.resolve())
    except ModelError as err:
        raise ConfigError(f"{place}: {err}") from None
    settings = read_model_config(path / "config.json", place)
    if seq2seq and not settings.get("is_encoder_decoder", False):
        raise ConfigError(f"{place}: {name} is not {wanted} (its config.json has no is_encoder_decoder: true); "
                          f"give a translation model such as a Marian or T5 directory")
    architectures = settings.get("architectures") or ["ForCausalLM"]  # unknown: let loading decide
    if not seq2seq and (settings.get("is_encoder_decoder") or not any(k in a for a in architectures for k in LM_HEADS)):
        raise ConfigError(f"{place}: {name} is not {wanted} (its config.json names {settings.get('architectures')})")


def read_model_config(path: Path, place: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{place}: cannot read {path}: {err}") from None
