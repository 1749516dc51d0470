"""`partial`: freeze the embeddings and the lowest N layers, or train only the top k layers, or only
modules whose names match patterns. The classification head always trains."""

from __future__ import annotations

import fnmatch

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tunelab.errors import ConfigError
from tunelab.methods.classifier import ClassifierStrategy
from tunelab.methods.registry import register
from tunelab.methods.selection import freeze_all, is_embedding, is_head, layer_index, num_layers, unfreeze
from tunelab.model_facts import model_facts


class PartialSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
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
class PartialStrategy(ClassifierStrategy):
    Settings = PartialSettings

    def check(self) -> None:
        """Layer counts against the model's config.json, before its weights load (smollm2-135m before its
        first conversion has none yet: `prepare` checks the loaded model with the same rule)."""
        super().check()
        facts = model_facts(self.experiment.model.name)
        if facts is not None and facts.num_layers is not None:
            self.first_trained_layer(facts.num_layers)

    def prepare(self, loaded):
        model, settings = loaded.model, self.settings
        layers = num_layers(model)
        first_trained = self.first_trained_layer(layers)
        freeze_all(model)

        def keep(name: str) -> bool:
            if is_head(name, loaded.missing_keys):
                return True
            if settings.train_modules is not None:
                return any(fnmatch.fnmatch(name, pattern) for pattern in settings.train_modules)
            index = layer_index(name)
            if index is not None:
                return index >= first_trained
            # Outside the layer stack: embeddings (frozen by default) and final norms/poolers (trained).
            return not (is_embedding(name) and settings.freeze_embeddings)

        trained = unfreeze(model, keep)
        if settings.train_modules is not None and not any(not is_head(n, loaded.missing_keys) for n in trained):
            raise ConfigError(f"strategy.train_modules {settings.train_modules} match no parameter of {type(model).__name__}")
        return model

    def first_trained_layer(self, layers: int) -> int:
        settings = self.settings
        if settings.freeze_layers is not None:
            self.check_at_most(layers, "freeze_layers", "(freezing all of them trains the head only)")
            return settings.freeze_layers
        if settings.train_top_layers is not None:
            self.check_at_most(layers, "train_top_layers", "")
            return layers - settings.train_top_layers
        return layers

    def check_at_most(self, layers: int, key: str, note: str) -> None:
        value = getattr(self.settings, key)
        if value > layers:
            raise ConfigError(
                f"{self.experiment.locate('strategy', key)}: strategy.{key} is {value}, but model "
                f"'{self.experiment.model.name}' has only {layers} layers; set it to at most {layers} {note}".rstrip()
            )
