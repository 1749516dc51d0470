"""Wrapping a model with a Hugging Face PEFT method (lora, ia3, vera, oft, adalora, ln_tuning, prompt/prefix/P-tuning),
for any read-out: the PEFT model change (`peft.py`) and the head strategies (`methods/peft_common.py`) use it.

PEFT does the method; tunelab only (1) turns a strategy's settings into a PEFT config, (2) checks
them against the model's architecture *before* anything trains, and (3) saves a standard PEFT
adapter directory (`<run_dir>/adapter/`: `adapter_config.json` + `adapter_model.safetensors`) that
plain `peft.PeftModel.from_pretrained(base_model, "<run_dir>/adapter")` loads.

`apply_peft(model, settings, task_type)` is the one entry point, so a model with a language-model
head (task type "CAUSAL_LM") can be wrapped the same way as a classifier ("SEQ_CLS"): a
prompt-learning strategy composes its template and verbalizer with LoRA or soft prompts by calling
it. Each settings class offers `peft_config(model_config, task_type, tokenizer_path) -> PeftConfig`,
and may offer `on_wrapped(peft_model)`, called after wrapping (also on the meta-device skeleton), to
attach `tunelab.train.TrainHooks` (an optimizer, Trainer callbacks) the method needs whatever read-out trains it.

With task type SEQ_CLS, PEFT itself trains the head alongside (`classifier`/`score` become
`modules_to_save`); any other newly initialised module of the base model is added to that list.
"""

from __future__ import annotations

import inspect
import re

import torch

from tunelab.config import location
from tunelab.errors import ConfigError
from tunelab.model_changes.adapter import ADAPTER_DIR  # noqa: F401 (one name for both adapter formats)
from tunelab.model_facts import decoder_only


class SettingsError(ConfigError):
    """A ConfigError about one strategy key; strategies add the experiment file and line."""

    def __init__(self, key: str, message: str):
        super().__init__(f"strategy.{key}: {message}")
        self.key = key


# ---------------------------------------------------------------------------------------------
# Wrapping a model


def apply_peft(model: torch.nn.Module, settings, task_type: str = "SEQ_CLS", *, max_length: int | None = None,
               tokenizer_path: str | None = None, modules_to_save: list[str] | None = None):
    """Wrap `model` with the PEFT method `settings` describes; raise SettingsError for bad settings.

    max_length: the longest input the model will see; prompt methods add their virtual tokens to it
    and must stay within the model's position embeddings. tokenizer_path: for prompt tuning from text.
    """
    from peft import get_peft_model

    try:
        config = settings.peft_config(model.config, task_type, tokenizer_path)
    except ValueError as err:  # PEFT's own config checks (our SettingsError is no ValueError: it passes)
        raise ConfigError(f"invalid {type(settings).__name__}: {err}") from None
    check_supported(model, config)
    check_positions(model.config, config, max_length)
    check_targets(model, config)
    if modules_to_save:
        heads = PEFT_HEAD_MODULES.get(str(getattr(config, "task_type", "")), ())
        kept = outermost(set(modules_to_save) | set(config.modules_to_save or []) | set(heads))
        config.modules_to_save = [m for m in kept if m not in heads] or None  # PEFT adds `heads` itself
    if on_meta(model) and isinstance(getattr(config, "init_lora_weights", True), str):
        config.init_lora_weights = True  # PiSSA/OLoRA decompose real weights; the skeleton check has none
    try:
        peft_model = get_peft_model(model, config)
    except (ValueError, TypeError, AttributeError) as err:  # PEFT's own refusals, e.g. an unknown architecture
        raise ConfigError(f"PEFT cannot apply {type(config).__name__} to {type(model).__name__}: {err}") from None
    if hasattr(settings, "on_wrapped"):  # e.g. attach training hooks (LoRA+, AdaLoRA), convert PiSSA on save
        settings.on_wrapped(peft_model)
    return peft_model


def on_meta(model: torch.nn.Module) -> bool:
    return any(p.device.type == "meta" for p in model.parameters())


def check_supported(model: torch.nn.Module, config) -> None:
    """Refuse, before training, what PEFT would refuse (or silently mis-wire) on this architecture.

    Prompt methods feed `inputs_embeds`. Prefix methods feed keys/values: PEFT passes them as
    `past_key_values`, which transformers >= 5.24 renamed `cache` (still accepting the old keyword).
    A causal LM takes them either way; for the other task types PEFT looks for a parameter literally
    named `past_key_values` on the model or its backbone, and refuses the model when there is none.
    """
    from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig

    if isinstance(config, (PromptTuningConfig, PromptEncoderConfig)):
        if "inputs_embeds" not in forward_parameters(model):
            raise unsupported(model, config, "its forward does not take `inputs_embeds`")
    elif isinstance(config, PrefixTuningConfig):
        check_prefix_supported(model, config)


def check_prefix_supported(model: torch.nn.Module, config) -> None:
    """PEFT's own rule (PeftModelForSequenceClassification.forward & co.), checked up front."""
    if str(config.task_type) in ("CAUSAL_LM", "TaskType.CAUSAL_LM"):
        if not {"past_key_values", "cache"} & forward_parameters(model):
            raise unsupported(model, config, "its forward takes neither `past_key_values` nor `cache`")
        return
    # PEFT passes prefixes to the backbone (e.g. `bert`) when the head model's forward lacks them.
    candidates = [model] + [child for _, child in model.named_children()]
    if any("past_key_values" in forward_parameters(m) for m in candidates):
        return
    renamed = any("cache" in forward_parameters(m) for m in candidates)
    import peft
    import transformers

    why = ("PEFT refuses it: \"Model does not support past key values which are required for prefix tuning.\""
           + (f" (transformers {transformers.__version__} renamed the argument to `cache`, which PEFT "
              f"{peft.__version__} does not pass to a {config.task_type} model)" if renamed else ""))
    raise unsupported(model, config, why, hint="or use the prefix through a language-model read-out (pet)")


def forward_parameters(module: torch.nn.Module) -> set[str]:
    forward = getattr(module, "forward", None)
    return set(inspect.signature(forward).parameters) if callable(forward) else set()


def unsupported(model: torch.nn.Module, config, why: str, hint: str = "") -> ConfigError:
    method = type(config).__name__.removesuffix("Config")
    model_type = getattr(model.config, "model_type", "?")
    return ConfigError(
        f"{type(model).__name__} (model_type={model_type!r}) does not support the method {method}: {why}. "
        f"Use lora, ia3 or adapter instead{', ' + hint if hint else ''}"
    )


def table_targets(table: dict, model_config, method: str, ours: dict | None = None) -> list[str]:
    """Default target modules for `method`: ours per model_type first, then PEFT's table; else name them."""
    model_type = getattr(model_config, "model_type", None)
    targets = (ours or {}).get(model_type) or table.get(model_type)
    if not targets:
        raise SettingsError("target_modules", f"no default {method} target modules for model_type {model_type!r}; "
                            f"set strategy.target_modules (layers it has are listed by their name suffix, e.g. [q_proj, v_proj])")
    return list(targets)


def check_positions(model_config, config, max_length: int | None) -> None:
    """Virtual tokens take positions too: num_virtual_tokens + max_length must fit the position table."""
    virtual = getattr(config, "num_virtual_tokens", None)
    limit = getattr(model_config, "max_position_embeddings", None)
    if virtual and limit and max_length and virtual + max_length > limit:
        raise SettingsError(
            "num_virtual_tokens",
            f"{virtual} virtual tokens + model.max_length {max_length} = {virtual + max_length} exceeds the "
            f"model's {limit} positions; lower strategy.num_virtual_tokens to at most {limit - max_length} "
            f"or model.max_length",
        )


def check_targets(model: torch.nn.Module, config) -> None:
    """Every target module name must match some module (PEFT only complains when none matches)."""
    names = [name for name, _ in model.named_modules()]
    for key in ("target_modules", "feedforward_modules"):
        targets = getattr(config, key, None)
        if targets is None:
            continue
        patterns = [targets] if isinstance(targets, str) else sorted(targets)
        unmatched = [p for p in patterns if not any(module_matches(name, p, regex=isinstance(targets, str)) for name in names)]
        if unmatched:
            raise SettingsError(
                key, f"{unmatched} match no module of {type(model).__name__}; linear layers it has: {linear_suffixes(model)}"
            )
    targets, feedforward = getattr(config, "target_modules", None), getattr(config, "feedforward_modules", None)
    if isinstance(targets, (set, list)) and isinstance(feedforward, (set, list)) and not set(feedforward) <= set(targets):
        raise SettingsError("feedforward_modules", f"{sorted(set(feedforward) - set(targets))} must also be in target_modules")


def module_matches(name: str, pattern: str, regex: bool = False) -> bool:
    """PEFT's rule: a string is a full-match regex; a list entry matches a whole dotted suffix."""
    if regex:
        return re.fullmatch(pattern, name) is not None
    return name == pattern or name.endswith("." + pattern)


def linear_suffixes(model: torch.nn.Module) -> list[str]:
    """Distinct names of the linear layers inside transformer layers (what target_modules usually lists)."""
    suffixes = {re.sub(r"^.*\.\d+\.", "", name) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    return sorted(suffixes)


# The head modules PEFT's task models add to modules_to_save themselves (PeftModelForSequenceClassification, ...).
PEFT_HEAD_MODULES = {"SEQ_CLS": ("classifier", "score"), "TOKEN_CLS": ("classifier", "score"), "QUESTION_ANS": ("qa_outputs",)}


def outermost(modules: set[str]) -> list[str]:
    """Leave out modules inside another listed one: PEFT would wrap `classifier.dense` inside the
    `classifier` it already saves (RoBERTa- and MPNet-style heads), and fail to load what it saved."""
    return sorted(m for m in modules if not any(m.startswith(other + ".") for other in modules))


def new_modules(missing_keys: list[str]) -> list[str]:
    """Modules holding newly initialised weights (the task head): they must train and be saved."""
    return sorted({key.rsplit(".", 1)[0] for key in missing_keys if "." in key})


def fit_padding(tokenizer, peft_model) -> None:
    """Left-pad for decoder classifiers fed `inputs_embeds` (prompt tuning, P-tuning).

    A decoder's sequence-classification head reads the last non-pad token, found from `input_ids`;
    given `inputs_embeds` it takes the last position, which right padding fills with pad tokens.
    Left padding puts the pads between the soft prompt and the text (PEFT prepends the prompt and
    ignores position_ids), stretching their rotary distance by the pad count: a small effect
    (≈1e-4 in probabilities on the tests' tiny model), where right padding reads a pad token.
    """
    from peft import PeftType

    peft_type = peft_model.peft_config[peft_model.active_adapter].peft_type
    if peft_type in (PeftType.PROMPT_TUNING, PeftType.P_TUNING) and decoder_only(peft_model.config):
        tokenizer.padding_side = "left"


# ---------------------------------------------------------------------------------------------
# Checking settings on the architecture only (no weights loaded)


def skeleton(experiment, num_labels: int, head: str = "classification") -> torch.nn.Module:
    """The model's architecture on the meta device: built from its config in about a second, no weights."""
    from transformers import AutoConfig

    from tunelab.models import auto_class_for, resolve_model_path, with_hub_errors

    cfg = experiment.model
    path = resolve_model_path(cfg.name)
    config = with_hub_errors(path, lambda **hub: AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code, **hub))
    if head in ("classification", "token_classification"):
        config.num_labels = max(num_labels, 2)
    with torch.device("meta"):
        model = auto_class_for(head).from_config(config, trust_remote_code=cfg.trust_remote_code)
    if head == "classification" and cfg.pooling:
        from tunelab.pooling import apply_pooling

        apply_pooling(model, cfg.pooling)  # PEFT's check then sees the model that will train
    return model


def located(err: ConfigError, experiment) -> ConfigError:
    """Prefix a settings error with the experiment file (and the key's line when known)."""
    line = experiment.lines.get(("strategy", err.key)) if isinstance(err, SettingsError) else None
    where = experiment.source + location(line)
    return ConfigError(f"{where}: {err}")
