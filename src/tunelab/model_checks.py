"""Settings checked against the model itself (its config.json, see model_facts), before weights load.

`run.prepare` calls `check_model`; when the model's facts are unknown until it loads (smollm2-135m
before its one-time GGUF conversion, which loading does anyway), `run.execute` calls
`check_when_loaded`, the same check once the model's directory exists, still before training starts.
"""

from __future__ import annotations

from tunelab.errors import ConfigError, ModelError
from tunelab.model_facts import ModelFacts, model_facts, resolved_facts


def check_model(config) -> bool:
    """Check `model.name` and `model.max_length` without loading weights. False when the model's
    facts cannot be known yet (a hub id, or smollm2-135m not converted): check again when it loads."""
    try:
        facts = model_facts(config.model.name)
    except ModelError as err:
        raise ModelError(f"{config.locate('model', 'name')}: {err}") from None
    if facts is None:
        return False
    check_max_length(config, facts)
    check_dropout_keys(config)
    return True


def check_dropout_keys(config) -> None:
    """`train.dropout` names kinds the architecture has (its config.json; no weights)."""
    if config.train.dropout is None or not config.train.dropout.given():
        return
    from transformers import AutoConfig

    from tunelab.model_facts import facts_dir
    from tunelab.training.regularization import check_dropout

    model_config = AutoConfig.from_pretrained(str(facts_dir(config.model.name)),
                                              trust_remote_code=config.model.trust_remote_code)
    check_dropout(model_config, config.train.dropout.given(),
                  where=lambda kind: config.locate("train", "dropout", kind) + ": ")


def check_max_length(config, facts: ModelFacts) -> None:
    """Inputs longer than the model's position table crash it (an index error in the middle of predict)."""
    limit, asked = facts.max_positions, config.model.max_length
    if limit is None or asked <= limit:
        return
    default = "" if ("model", "max_length") in config.lines else " (the default)"
    raise ConfigError(
        f"{config.locate('model', 'max_length')}: model.max_length is {asked}{default}, but model "
        f"'{config.model.name}' reads at most {limit} tokens ({facts.limit_source}), so longer inputs would crash "
        f"it. Set model.max_length to {limit} or less"
    )


def check_when_loaded(config) -> None:
    """`check_max_length` once the model's directory exists (called right before training).

    Resolving the model path converts smollm2-135m (~24 s, once), which the model load right after
    does anyway; doing it in `prepare` would make every check pay for it.
    """
    facts = resolved_facts(config.model.name)
    if facts is not None:
        check_max_length(config, facts)
