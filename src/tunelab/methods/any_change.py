"""`classifier`: a classification-head read-out with ANY model change that pairs with it — the
general form of which `head`, `full`, `partial`, `bitfit` and `adapter` are shorthands::

    strategy: {name: classifier, train: bitfit}                      # = {name: bitfit}
    strategy: {name: classifier, train: partial, delta: {train_top_layers: 2}}
    strategy: {name: classifier, train: ln_only}                     # a change you registered

`train` names the model change (`tunelab.model_changes`; `tunelab strategies` lists them), `delta`
holds its settings, checked by its own schema. `lm_head` does not pair with a head read-out and
exits 2 before any weight loads. The artifact is the change's own.
"""

from __future__ import annotations

import functools

from pydantic import Field

from tunelab.methods.classifier import ClassifierStrategy
from tunelab.methods.registry import register
from tunelab.model_changes import Target, resolve_change
from tunelab.readouts.tokens import head_architecture
from tunelab.settings import StrictSettings


class ClassifierSettings(StrictSettings):
    train: str = "head"
    """The model change: `head`, `full`, `partial`, `bitfit`, `adapter`, a PEFT method or a registered one."""
    delta: dict = Field(default_factory=dict)
    """Settings of the model change named by `train`; checked by its own schema."""


@register("classifier", "a classification head with any model change: strategy.train names it, strategy.delta its settings")
class AnyChangeStrategy(ClassifierStrategy):
    Settings = ClassifierSettings

    @classmethod
    def check_pairing(cls, settings: ClassifierSettings, experiment) -> None:
        """The model change exists, pairs with a head read-out and takes `delta` (a sweep checks every cell so)."""
        resolve_change(experiment, cls.strategy_name, settings.train, settings.delta, "head")

    @property
    def change_name(self) -> str:
        return self.settings.train

    @functools.cached_property
    def resolved(self):
        return resolve_change(self.experiment, self.strategy_name, self.settings.train, self.settings.delta, "head")

    @property
    def change(self):
        return self.resolved[0].change

    @property
    def change_settings(self):
        return self.resolved[1]

    def target(self) -> Target:
        return Target("head", self.experiment, head_architecture(self.experiment), ("strategy", "delta"), len(self.label_names))
