"""`pet_ensemble`: PET's ensemble of patterns — one `pet` model per (template, verbalizer), averaged.

Schick & Schütze (2021) train one model per pattern-verbalizer pair (PVP) on the same K-shot split
and average their label distributions::

    p_t(l | x) = pet model t's label distribution (itself averaged over demonstration sets if any)
    p(l | x)   = (1 / T) · Σ_t p_t(l | x)        (uniform weights: PET's alternative to weighting
                                                 by train accuracy, which is ~100% for every model
                                                 at K=16 and so carries no information)
    prediction = argmax_l p(l | x)

Every member shares the strategy's other settings (`train`, `delta`, `demonstrations`, ...) and the
experiment's `train:` section; each trains on the K-shot train split with its best dev epoch kept.
A pattern without `verbalizer` uses prompt.verbalizer. The members are saved under ``ensemble/<t>/``.

    strategy:
      name: pet_ensemble
      patterns:
        - {template: "Review: {{ text }}\\nSentiment:"}
        - {template: "{{ text }} All in all, it was", verbalizer: {negative: " terrible", positive: " great"}}
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import Field, field_validator

from tunelab.errors import ConfigError
from tunelab.methods.pet import PetPredictor, PetSettings, PetStrategy
from tunelab.methods.registry import register
from tunelab.metrics import compute_metrics
from tunelab.outputs import label_outputs
from tunelab.prompts import compile_template
from tunelab.prompts.plan import where
from tunelab.settings import StrictSettings

MEMBERS_DIR = "ensemble"
TRAINING_DIR = "members"
"""Where each member trains (its logs, its held-out dev record); its weights are saved under MEMBERS_DIR."""


class Pattern(StrictSettings):
    template: str
    """Jinja template of this member (as prompt.template)."""
    verbalizer: dict[str | int, str | list[str]] | None = None
    """Its label words (as prompt.verbalizer); default prompt.verbalizer."""

    @field_validator("template")
    @classmethod
    def _compiles(cls, source: str) -> str:
        try:
            compile_template(source, "template")
        except ConfigError as err:
            raise ValueError(str(err)) from None
        return source


class PetEnsembleSettings(PetSettings):
    patterns: list[Pattern] = Field(min_length=2)
    """Two or more (template, verbalizer) pairs: one pet model each, their label distributions averaged."""


def member_strategy(parent, index: int) -> PetStrategy:
    """A plain `pet` strategy for pattern `index`: the parent's settings, that pattern's prompt."""
    pattern = parent.settings.patterns[index]
    settings = PetSettings(**{k: getattr(parent.settings, k) for k in PetSettings.model_fields})
    member = PetStrategy(settings, parent.experiment, parent.label_names)
    update = {"template": pattern.template}
    if pattern.verbalizer is not None:
        update["verbalizer"] = pattern.verbalizer
    member.prompt = parent.prompt.model_copy(update=update)
    return member


def encode_members(parent, splits) -> list[tuple]:
    """Every member's (plan, train, dev) features, all prompts checked before any weight loads."""
    encoded = []
    for index, member in enumerate(parent.members):
        try:
            encoded.append(member.encode_splits(splits))
        except ConfigError as err:
            raise ConfigError(f"{where(parent.experiment, 'strategy', 'patterns')}pattern {index + 1}: {err}") from None
    return encoded


def check_member_splits(parent, splits) -> None:
    """Each member's first examples encoded (`PetStrategy.check_splits`); an error names its pattern."""
    for index, member in enumerate(parent.members):
        try:
            member.check_splits(splits)
        except ConfigError as err:
            raise ConfigError(f"{where(parent.experiment, 'strategy', 'patterns')}pattern {index + 1}: {err}") from None


def check_members(parent) -> list[PetStrategy]:
    """Every member's checks; an error names the pattern it comes from."""
    for key in ("search_label_words", "generate_templates"):
        if getattr(parent.settings, key) is not None:
            raise ConfigError(f"{where(parent.experiment, 'strategy', key)}strategy.{key}: a pattern ensemble takes its "
                              f"prompts from strategy.patterns; search prompts with pet, then list the winners as patterns")
    members = []
    for index in range(len(parent.settings.patterns)):
        member = member_strategy(parent, index)
        try:
            member.check()
        except ConfigError as err:
            raise ConfigError(f"{where(parent.experiment, 'strategy', 'patterns')}pattern {index + 1}: {err}") from None
        members.append(member)
    return members


@register("pet_ensemble", "PET's ensemble: one pet model per template/verbalizer pattern, label distributions averaged",
          family="prompting")
class PetEnsemble(PetStrategy):
    Settings = PetEnsembleSettings

    def check(self) -> None:
        self.members = check_members(self)

    def check_splits(self, splits) -> None:
        check_member_splits(self, splits)

    def fit(self, splits, run_dir: Path):
        encoded = encode_members(self, splits)
        ensemble, member_costs = train_ensemble(self.members, encoded, run_dir)
        costs = ensemble_costs(self, ensemble, member_costs, splits.dev)
        hold_out_ensemble(self, costs, len(self.members), splits.dev, run_dir)
        return ensemble, costs

    def load(self, run_dir: Path):
        members = [member_strategy(self, i) for i in range(len(self.settings.patterns))]
        return EnsemblePredictor([m.load(Path(run_dir) / MEMBERS_DIR / str(i)) for i, m in enumerate(members)])

    def preview(self, splits, n: int) -> list[str]:
        blocks = []
        for index, member in enumerate(check_members(self), start=1):
            blocks += [f"--- pattern {index} ---"] + member.preview(splits, n)
        return blocks


def train_ensemble(members: list[PetStrategy], encoded: list[tuple], run_dir: Path) -> tuple:
    """Train every member on its encoded splits: (EnsemblePredictor, [member costs])."""
    predictors, costs = [], []
    for index, (member, (plan, train, dev)) in enumerate(zip(members, encoded)):
        predictor, cost = member.train_on(plan, train, dev, Path(run_dir) / TRAINING_DIR / str(index))
        predictors.append(predictor)
        costs.append(cost)
    return EnsemblePredictor(predictors), costs


def ensemble_costs(strategy, ensemble, member_costs: list[dict], dev: list[dict]) -> dict:
    """Summed training costs, the members' own dev scores and the ensemble's dev score (`best_dev`)."""
    keys = ("train_seconds", "train_tokens", "steps", "trainable_params", "total_params")  # T models: T times the cost
    summed = {key: sum(c[key] for c in member_costs) for key in keys if all(key in c for c in member_costs)}
    shared = {k: v for k, v in member_costs[0].items() if k not in ("best_epoch", "stopped_early", "train_tokens_per_second",
                                                                   "held_out_dev", "held_out_epochs")}
    members = [{"dev": c.get("best_dev", {}), "best_epoch": c.get("best_epoch")} for c in member_costs]
    costs = {**shared, **summed, "members": members}
    costs["best_dev"] = dev_metrics(strategy, ensemble, dev) if dev else {}
    return costs


def hold_out_ensemble(strategy, costs: dict, members: int, dev: list[dict], run_dir: Path) -> None:
    """The ensemble's held-out dev score from its members' (tunelab.held_out_dev), when every member has one: its
    dev score above is that of checkpoints chosen on the same dev split."""
    from tunelab.held_out_dev import HELD_OUT_FILE, averaged_held_out, read_held_out

    records = [read_held_out(Path(run_dir) / TRAINING_DIR / str(i) / HELD_OUT_FILE) for i in range(members)]
    gold = np.asarray([strategy.label_names.index(e["label"]) for e in dev if e.get("label") in strategy.label_names])
    held = averaged_held_out(records, strategy.score_probabilities, gold) if dev else None
    if held is not None:
        costs["held_out_dev"], costs["held_out_epochs"] = held.metrics, held.chosen_epochs
        held.write(Path(run_dir) / HELD_OUT_FILE, records[0]["metric"], [], list(strategy.label_names))


def dev_metrics(strategy, predictor, dev: list[dict]) -> dict:
    predictions = [o["prediction"] for o in predictor.predict(dev)]
    return compute_metrics(strategy.experiment.metrics, predictions, [e["label"] for e in dev], labels=strategy.label_names)


class EnsemblePredictor:
    """Averages the label distributions of several pet predictors."""

    def __init__(self, members: list[PetPredictor]):
        self.members = members

    @property
    def labels(self) -> list[str]:
        return self.members[0].plan.labels

    def member_probs(self, examples: list[dict]) -> torch.Tensor:
        """(T, N, L): each member's label distribution for each example."""
        return torch.stack([m.label_probs(examples) for m in self.members])

    def label_probs(self, examples: list[dict]) -> torch.Tensor:
        return self.member_probs(examples).mean(0)  # (N, L)

    def predict(self, examples: list[dict]) -> list[dict]:
        if not examples:
            return []
        return label_outputs(self.label_probs(examples), self.labels)

    def save(self, directory: Path) -> None:
        for index, member in enumerate(self.members):
            folder = Path(directory) / MEMBERS_DIR / str(index)
            folder.mkdir(parents=True, exist_ok=True)
            member.save(folder)
