"""Strategies register here by name: adding one means one file and one `@register(...)` line.

A strategy answers two questions (DESIGN.md): how the model is changed, and how a label is read
out. Every strategy offers the same small interface (`Strategy` below).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel

from tunelab.plugins import import_package_modules, unknown_entry
from tunelab.model_changes.registry import register_peft


class Predictor(Protocol):
    """A trained (or prompted) model that labels examples."""

    def predict(self, examples: list[dict]) -> list[dict]:
        """One dict per example: {"prediction": str, "scores": {label: float}} (scores optional)."""

    def save(self, directory: Path) -> None:
        """Write the artifact (whole model, trainable delta, adapter dir, or nothing) into directory."""


class Strategy(Protocol):
    """Optional class attributes a sweep reads: `teacher_setting` / `linked_setting` (entries whose cells it
    reads, sweep/expand.py), `reads_weights`, and the classmethod `finished_result_changes(strategy_config,
    costs)` (why a finished cell is stale though its config reads the same, sweep/runner.py)."""

    Settings: type[BaseModel]

    def __init__(self, settings: BaseModel, experiment, label_names: list[str] | None): ...

    def check(self) -> None:
        """Catch bad settings before any training (raise ConfigError)."""

    def fit(self, splits, run_dir: Path) -> tuple[Predictor, dict]:
        """Adapt the model on splits.train (dev for model selection); return the predictor and costs."""

    def load(self, run_dir: Path) -> Predictor:
        """Rebuild the predictor from a finished run directory."""


@dataclass(frozen=True)
class StrategyInfo:
    name: str
    description: str
    family: str
    cls: type


REGISTRY: dict[str, StrategyInfo] = {}


def register(name: str, description: str, family: str = "fine-tuning"):
    """Class decorator; a strategy whose settings build a PEFT config (`peft_config(...)`) also becomes
    the model change of the same name (`train: lora` under classifier, pet or sft)."""
    def decorate(cls):
        REGISTRY[name] = StrategyInfo(name, description, family, cls)
        cls.strategy_name = name
        if hasattr(getattr(cls, "Settings", None), "peft_config"):
            register_peft(name, description, cls.Settings)
        return cls

    return decorate


def load_all() -> None:
    import_package_modules("tunelab.methods", Path(__file__).parent)


def get_strategy(name: str) -> StrategyInfo:
    load_all()
    if name not in REGISTRY:
        raise unknown_entry("strategy", name, sorted(REGISTRY), "; see `tunelab strategies`")
    return REGISTRY[name]


def all_strategies() -> list[StrategyInfo]:
    load_all()
    return sorted(REGISTRY.values(), key=lambda info: (info.family, info.name))
