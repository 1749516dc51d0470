"""`partial`: freeze the embeddings and the lowest N layers, or train only the top k layers, or only
modules whose names match patterns. A classification head (under a `head` read-out) always trains;
under an LM read-out what sits above the layers (final norm, an untied LM head) trains with the
upper layers. Artifact: `delta.safetensors` (delta.py)."""

from __future__ import annotations

import fnmatch

from pydantic import Field, model_validator

from tunelab.errors import ConfigError
from tunelab.model_changes.delta import DeltaChange
from tunelab.model_changes.registry import register
from tunelab.model_changes.selection import freeze_all, head_of, is_embedding, layer_index, num_layers, unfreeze
from tunelab.settings import StrictSettings


class PartialSettings(StrictSettings):
    freeze_layers: int | None = Field(None, ge=0)
    """Freeze the embeddings and the lowest N transformer layers; train the rest."""
    train_top_layers: int | None = Field(None, ge=1)
    """Train only the top k transformer layers (and the head)."""
    train_modules: list[str] | None = None
    """Train only parameters whose names match these glob patterns, e.g. ['*.attention.*']."""
    freeze_embeddings: bool = True

    @model_validator(mode="after")
    def _one_rule(self):
        chosen = [n for n in ("freeze_layers", "train_top_layers", "train_modules") if getattr(self, n) is not None]
        if len(chosen) != 1:
            raise ValueError(f"set exactly one of freeze_layers, train_top_layers, train_modules (got {chosen or 'none'})")
        return self


@register("partial", "train the upper layers only: freeze embeddings + lowest N layers, top-k layers, or matching modules")
class Partial(DeltaChange):
    Settings = PartialSettings

    def check(self, settings: PartialSettings, target) -> None:
        """Layer counts against the model's config.json, before its weights load (smollm2-135m before its
        first conversion has none yet: `apply` checks the loaded model with the same rule)."""
        from tunelab.model_facts import model_facts

        facts = model_facts(target.experiment.model.name)
        if facts is not None and facts.num_layers is not None:
            first_trained_layer(settings, facts.num_layers, target)

    def apply(self, loaded, settings: PartialSettings, target):
        model = loaded.model
        head = head_of(loaded, target)
        first_trained = first_trained_layer(settings, num_layers(model), target)
        freeze_all(model)

        def keep(name: str) -> bool:
            if head(name):
                return True
            if settings.train_modules is not None:
                return any(fnmatch.fnmatch(name, pattern) for pattern in settings.train_modules)
            index = layer_index(name)
            if index is not None:
                return index >= first_trained
            # Outside the layer stack: embeddings (frozen by default) and final norms/poolers (trained).
            return not (is_embedding(name) and settings.freeze_embeddings)

        trained = unfreeze(model, keep)
        if settings.train_modules is not None and not any(not head(n) for n in trained):
            raise ConfigError(f"{target.key('train_modules')} {settings.train_modules} match no parameter of {type(model).__name__}")
        return model


def first_trained_layer(settings: PartialSettings, layers: int, target) -> int:
    """The lowest layer that trains; a count beyond the model's layers is a ConfigError naming the key."""
    if settings.freeze_layers is not None:
        note = ("(freezing all of them trains the head only)" if target.readout == "head" else
                "(freezing all of them trains only what sits above the layers)")
        check_at_most(settings, layers, "freeze_layers", note, target)
        return settings.freeze_layers
    if settings.train_top_layers is not None:
        check_at_most(settings, layers, "train_top_layers", "", target)
        return layers - settings.train_top_layers
    return layers


def check_at_most(settings: PartialSettings, layers: int, key: str, note: str, target) -> None:
    value = getattr(settings, key)
    if value > layers:
        raise ConfigError(
            f"{target.locate(key)}: {target.key(key)} is {value}, but model "
            f"'{target.experiment.model.name}' has only {layers} layers; set it to at most {layers} {note}".rstrip()
        )
