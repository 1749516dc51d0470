"""Model changes register here by name: adding one means one file and one `@register(...)` line.

Every model change offers the same small interface (`ModelChange` below). What it is applied for is
a `Target`: the read-out it feeds, by pairing key (`tunelab.readouts`: `head`, a classification
head; `lm`, the pretrained LM head, which the `verbalizer` (pet) and `generation` (sft) read-outs
both read) and the experiment its settings come from. A change declares the pairing keys it pairs
with; `resolve_change` refuses any other pair before a weight loads, naming the pairs that work.
`none` trains nothing (zero-shot prompting's change): it pairs with the LM read-outs, and a strategy
that trains refuses it.

Any PEFT strategy (`lora`, `ia3`, `prompt_tuning`, ...) is also a model change under its own name,
without a file here: its strategy module hands its settings schema to `register_peft` when it is
imported (`tunelab.methods.registry.register`), and `peft.py` wraps it. Nothing here imports
`tunelab.methods`; the PEFT changes are listed once the strategies are loaded (any strategy lookup
loads them all).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from pydantic import BaseModel

from tunelab.errors import ConfigError
from tunelab.plugins import import_package_modules, unknown_entry
from tunelab.readouts.registry import PAIRINGS, pairing_of


@dataclass(frozen=True)
class Target:
    """What a model change is applied for: the read-out, and where its settings came from.

    readout: `head` (a classification head on the model, new weights in `loaded.missing_keys`) or
    `lm` (the pretrained LM head reads the label; nothing new to train). architecture: the class the
    model loads as (`classification`, `causal_lm`, `masked_lm`), for the meta-device skeleton that
    checks settings before any weight loads. settings_key: where the change's settings sit in the
    experiment file (`strategy` for `partial`, `strategy.delta` under `pet`), for error messages.
    """

    readout: str
    experiment: Any = None
    architecture: str = "classification"
    settings_key: tuple[str, ...] = ("strategy",)
    num_labels: int = 2

    @property
    def task_type(self) -> str | None:
        """PEFT's task type for this target (None: PEFT's plain wrapper, as for a masked LM)."""
        if self.readout == "head":
            return "TOKEN_CLS" if self.architecture == "token_classification" else "SEQ_CLS"
        return "CAUSAL_LM" if self.architecture == "causal_lm" else None

    @property
    def max_length(self) -> int | None:
        return self.experiment.model.max_length if self.experiment is not None else None

    def key(self, name: str) -> str:
        """The dotted key of one setting, e.g. `strategy.delta.freeze_layers`."""
        return ".".join(self.settings_key + (name,))

    def locate(self, name: str) -> str:
        """`file, line N` of one setting (the file alone when the line is unknown)."""
        return self.experiment.locate(*self.settings_key, name)

    def skeleton(self) -> torch.nn.Module:
        """The model's architecture on the meta device (no weights read), to check settings against."""
        from tunelab.model_changes.peft_common import skeleton

        return skeleton(self.experiment, self.num_labels, self.architecture)


class ModelChange(Protocol):
    """What every model change offers. `load_base(name=None)` loads the base model (or, given a
    directory, that model) as the read-out needs it and returns a `LoadedModel`."""

    Settings: type[BaseModel]

    def check(self, settings: BaseModel, target: Target) -> None:
        """Catch settings the architecture cannot take, before any weight loads (raise ConfigError)."""

    def apply(self, loaded, settings: BaseModel, target: Target) -> torch.nn.Module:
        """Freeze / unfreeze / insert / wrap `loaded.model`; return the model to train."""

    def save(self, model: torch.nn.Module, directory: Path, loaded, settings: BaseModel) -> None:
        """Write the artifact (format in the change's module docstring) into directory."""

    def load(self, directory: Path, load_base: Callable, settings: BaseModel, target: Target) -> tuple[Any, torch.nn.Module]:
        """(loaded, trained model) from a directory `save` wrote; checks the artifact before weights load."""


@dataclass(frozen=True)
class ChangeInfo:
    name: str
    description: str
    readouts: tuple[str, ...]
    """Pairing keys of the read-outs it pairs with (`tunelab.readouts.PAIRINGS`)."""
    change: ModelChange
    trains: bool = True
    """False for `none`: nothing trains, so no strategy that trains takes it."""


REGISTRY: dict[str, ChangeInfo] = {}
PEFT: dict[str, ChangeInfo] = {}


def register(name: str, description: str, readouts: tuple[str, ...] = ("head", "lm"), trains: bool = True):
    """Class decorator: `@register("bitfit", "only bias terms train")` makes `train: bitfit` work."""
    unknown = set(readouts) - set(PAIRINGS)
    if unknown:
        raise ValueError(f"unknown read-outs {sorted(unknown)}; known: {sorted(PAIRINGS)}")

    def decorate(cls):
        REGISTRY[name] = ChangeInfo(name, description, tuple(readouts), cls(), trains)
        cls.change_name = name
        return cls

    return decorate


def load_all() -> None:
    import_package_modules("tunelab.model_changes", Path(__file__).parent)


def register_peft(name: str, description: str, settings_class: type[BaseModel]) -> None:
    """A PEFT strategy's settings schema (`peft_config(...)`) as the model change of the same name;
    called by `tunelab.methods.registry.register` for every strategy whose settings build a PEFT config."""
    from tunelab.model_changes.peft import PeftChange

    PEFT[name] = ChangeInfo(name, "PEFT: " + re.sub(r",? \+ the head", "", description), ("head", "lm"),
                            PeftChange(settings_class))


def peft_changes() -> dict[str, ChangeInfo]:
    """Every PEFT strategy registered so far as a model change of the same name."""
    return dict(PEFT)


def get_model_change(name: str) -> ChangeInfo:
    load_all()
    if name in REGISTRY:
        return REGISTRY[name]
    peft = peft_changes()
    if name in peft:
        return peft[name]
    raise unknown_entry("model change", name, sorted(REGISTRY) + sorted(peft), "; see `tunelab strategies`")


def all_model_changes() -> list[ChangeInfo]:
    """The registered changes, then the PEFT methods, each by name."""
    load_all()
    return sorted(REGISTRY.values(), key=lambda info: info.name) + sorted(peft_changes().values(), key=lambda info: info.name)


def pairs_with(readout: str) -> list[str]:
    """The changes a strategy that trains can use with `readout` (a read-out name or a pairing key)."""
    pairing = pairing_of(readout)
    return [info.name for info in all_model_changes() if pairing in info.readouts and info.trains]


def resolve_change(experiment, strategy: str, train: str, options: dict, readout: str,
                   settings_key: tuple[str, ...] = ("strategy", "delta")) -> tuple[ChangeInfo, BaseModel]:
    """The change named by `strategy.train` and its validated settings (`strategy.delta`), for `readout`
    (a read-out name, `head`, `verbalizer`, `generation`, or its pairing key, `head`, `lm`).

    Refuses, before any weight loads, an unknown name, a change that does not pair with the
    strategy's read-out (e.g. `head` under `pet`: there is no new head to train) and `none` (the
    strategy trains; nothing would); errors name the file, the line and the pairs that work.
    """
    from tunelab.config import validate_settings

    where = experiment.locate("strategy", "train")
    pairing = pairing_of(readout)
    try:
        info = get_model_change(train)
    except ConfigError as err:
        raise ConfigError(f"{where}: strategy.train: {err}") from None
    if pairing not in info.readouts:
        raise ConfigError(
            f"{where}: strategy.train: '{strategy}' reads labels with {PAIRINGS[pairing]}, and the model change "
            f"'{train}' pairs only with {' or '.join(PAIRINGS[r] for r in info.readouts)}; with '{strategy}' use "
            f"train: {', '.join(pairs_with(pairing))}")
    if not info.trains:
        raise ConfigError(
            f"{where}: strategy.train: '{strategy}' trains the model, and the model change '{train}' trains nothing "
            f"(for prompting without training use zero_shot, few_shot or generate); with '{strategy}' use "
            f"train: {', '.join(pairs_with(pairing))}")
    if options and not info.change.Settings.model_fields:
        raise ConfigError(f"{experiment.locate(*settings_key)}: {'.'.join(settings_key)} holds the settings of the "
                          f"model change; train: {train} takes no settings")
    settings = validate_settings(info.change.Settings, options, settings_key, experiment.source, experiment.lines)
    return info, settings
