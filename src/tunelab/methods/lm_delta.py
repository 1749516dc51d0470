"""What trains in a language model that keeps its LM head (`pet`, `sft`): the `train:` choice.

`strategy.train` names any model change that pairs with an LM read-out (`tunelab.model_changes`):
``full``, ``lm_head``, ``bitfit``, ``partial``, ``adapter``, a PEFT strategy's name (``lora``,
``ia3``, ``prompt_tuning``, ...) or a change registered by anyone; its settings go under
``strategy.delta`` and are checked by the change's own schema. A change that does not pair with an
LM read-out (``head``: there is no new head to train) exits 2 before any weight loads, naming the
pairs that work. The artifact is the change's own (`model/`, `adapter/` or `delta.safetensors`)::

    strategy: {name: pet, train: bitfit, delta: {add_biases: true}}
    strategy: {name: pet, train: adapter, delta: {reduction_factor: 16}}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel

from tunelab.errors import ConfigError
from tunelab.model_changes import ChangeInfo, Target, resolve_change
from tunelab.model_changes.peft import is_soft_prompt


@dataclass
class LmChange:
    """A model change bound to its settings, applied for an LM read-out of `architecture`."""

    info: ChangeInfo
    settings: BaseModel
    target: Target

    @classmethod
    def resolve(cls, experiment, strategy: str, train: str, options: dict, architecture: str) -> LmChange:
        info, settings = resolve_change(experiment, strategy, train, options, "lm")
        return cls(info, settings, Target("lm", experiment, architecture, ("strategy", "delta")))

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def soft_prompt(self) -> bool:
        return is_soft_prompt(self.settings)

    def check(self) -> None:
        """The change's own checks against the architecture (meta device: no weights read)."""
        self.info.change.check(self.settings, self.target)

    def apply(self, loaded) -> torch.nn.Module:
        """Freeze / unfreeze / wrap `loaded.model`; returns the LM to train (refuses one with nothing to train)."""
        lm = self.info.change.apply(loaded, self.settings, self.target)
        if not any(p.requires_grad for p in lm.parameters()):
            raise ConfigError(f"{self.target.experiment.locate('strategy', 'train')}: train: {self.name} leaves no "
                              f"parameter of {type(loaded.model).__name__} to train; check strategy.delta")
        return lm

    def save(self, lm: torch.nn.Module, directory: Path, loaded) -> None:
        self.info.change.save(lm, Path(directory), loaded, self.settings)

    def load(self, run_dir: Path, load_base):
        """(loaded, lm) from a run directory; `load_base(name=None)` loads the base model or a model directory."""
        return self.info.change.load(Path(run_dir), load_base, self.settings, self.target)
