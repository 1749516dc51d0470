"""`ipet`: one round of PET self-training (iPET, Schick & Schütze 2021) on an unlabelled pool.

The protocol, step by step (no test label is read anywhere; dev labels only choose epochs)::

    1. ensemble  = pet_ensemble over `patterns`, each member trained on the K-shot train split
    2. pool      = `pool_size` examples of data.train with their labels dropped as they are read,
                   none of them a K-shot train, K-shot dev or test text (`tunelab.data.pool`)
    3. q(l | u)  = the ensemble's averaged label distribution for every pool example u
       kept      = the u with max_l q(l | u) >= `min_confidence` (0: all of them)
    4. final     = a fresh pet model on pattern `final_pattern`, trained on
                   K-shot train (gold labels)  +  kept pool examples with target
                   `soft`: q(· | u), cross-entropy against the distribution (PET's distillation target)
                   `hard`: argmax_l q(l | u)
                   best dev epoch kept, as for pet; `final_epochs` (default train.epochs)
    5. predictor = the final model alone (one model to deploy; the ensemble is not kept)

iPET runs several generations with growing pools and a final distillation into a classifier; this
is one generation with the final model being a pet model (so demonstrations and every `train:`
change compose with it). The pseudo-labelled pool is written to ``pseudo_labels.jsonl`` in the run
directory (text fields and q) so the labels the final model saw can be inspected.

    strategy:
      name: ipet
      patterns: [{template: "Review: {{ text }}\\nSentiment:"}, {template: "{{ text }} All in all, it was"}]
      pool_size: 200
      targets: soft
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from tunelab.data.pool import unlabelled_pool
from tunelab.errors import ConfigError
from tunelab.methods.pet import PetSettings, PetStrategy
from tunelab.methods.pet_ensemble import (Pattern, check_member_splits, check_members, encode_members, ensemble_costs,
                                          member_strategy, train_ensemble)
from tunelab.methods.registry import register
from tunelab.prompts.plan import where

PSEUDO_LABELS_FILE = "pseudo_labels.jsonl"


class IpetSettings(PetSettings):  # pet_ensemble's settings and more, one level from pet's (no chain of subclasses)
    patterns: list[Pattern] = Field(min_length=2)
    """Two or more (template, verbalizer) pairs: the ensemble that labels the pool (as pet_ensemble's)."""
    pool_size: int = Field(200, gt=0)
    """Unlabelled examples drawn from data.train (outside the K-shot splits) for the ensemble to label."""
    targets: Literal["soft", "hard"] = "soft"
    """What the final model learns on the pool: the ensemble's distribution (`soft`) or its argmax (`hard`)."""
    min_confidence: float = Field(0.0, ge=0, lt=1)
    """Pool examples whose ensemble confidence (max probability) is below this are left out."""
    final_pattern: int = Field(1, ge=1)
    """Which pattern (1 = the first) the final model uses."""
    final_epochs: float | None = Field(None, gt=0)
    """Epochs of the final model over K-shot train + pool; default train.epochs."""


@register("ipet", "iPET self-training: a pet ensemble labels an unlabelled pool, a new pet model trains on it",
          family="prompting")
class Ipet(PetStrategy):
    Settings = IpetSettings

    def check(self) -> None:
        s = self.settings
        if s.final_pattern > len(s.patterns):
            raise ConfigError(f"{where(self.experiment, 'strategy', 'final_pattern')}final_pattern is {s.final_pattern} "
                              f"but there are {len(s.patterns)} patterns; choose 1 to {len(s.patterns)}")
        self.members = check_members(self)

    def check_splits(self, splits) -> None:
        check_member_splits(self, splits)  # the final model reads one of the members' patterns

    def final_strategy(self) -> PetStrategy:
        return member_strategy(self, self.settings.final_pattern - 1)

    def fit(self, splits, run_dir: Path):
        s, run_dir = self.settings, Path(run_dir)
        pool = self_training_pool(self.experiment, splits, s.pool_size)
        encoded = encode_members(self, splits)  # every prompt checked before any weight loads
        final = self.final_strategy()
        plan, train, dev = final.encode_splits(splits)
        pool_features = final.encode_sets(plan, pool, "pool", 1)[0]
        ensemble, member_costs = train_ensemble(self.members, encoded, run_dir)
        costs = ensemble_costs(self, ensemble, member_costs, splits.dev)
        probs = ensemble.label_probs(pool)  # (U, L): the ensemble's distribution per pool example
        del ensemble
        gc.collect()
        kept = [i for i, row in enumerate(probs) if float(row.max()) >= s.min_confidence]
        write_pseudo_labels(run_dir / PSEUDO_LABELS_FILE, pool, probs, kept, self.label_names)
        targets = pseudo_features(train, pool_features, probs, kept, s.targets, len(self.label_names))
        predictor, final_costs = final.train_on(plan, targets, dev, run_dir / "final", epochs=s.final_epochs)
        counts = {label: sum(int(probs[i].argmax()) == n for i in kept) for n, label in enumerate(self.label_names)}
        final_costs.update({"ensemble_dev": costs["best_dev"], "members": costs["members"],
                            "train_seconds": final_costs["train_seconds"] + costs.get("train_seconds", 0.0),
                            "pool": {"size": len(pool), "kept": len(kept), "targets": s.targets,
                                     "min_confidence": s.min_confidence, "pseudo_label_counts": counts}})
        return predictor, final_costs

    def load(self, run_dir: Path):
        return self.final_strategy().load(run_dir)

    def preview(self, splits, n: int) -> list[str]:
        return self.final_strategy().preview(splits, n)


def pseudo_features(train: list[dict], pool: list[dict], probs: torch.Tensor, kept: list[int], targets: str,
                    num_labels: int) -> list[dict]:
    """Gold K-shot features plus the kept pool features with their targets. With soft targets every
    label is a distribution (gold ones one-hot), so a batch stacks into one (B, L) tensor."""
    if targets == "hard":
        return train + [{**pool[i], "labels": int(probs[i].argmax())} for i in kept]
    gold = [{**f, "labels": [float(j == f["labels"]) for j in range(num_labels)]} for f in train]
    return gold + [{**pool[i], "labels": probs[i].tolist()} for i in kept]


def write_pseudo_labels(path: Path, pool: list[dict], probs: torch.Tensor, kept: list[int], labels: list[str]) -> None:
    kept_set = set(kept)
    with open(path, "w", encoding="utf-8") as handle:
        for i, example in enumerate(pool):
            row = {k: v for k, v in example.items() if not k.startswith("_")}
            row.update({"pseudo_label": labels[int(probs[i].argmax())], "distribution": dict(zip(labels, probs[i].tolist())),
                        "kept": i in kept_set})
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def self_training_pool(experiment, splits, size: int) -> list[dict]:
    """Up to `size` unlabelled records of data.train, none with the text of a K-shot train, dev or test example
    (nor of a held-out test example left unscored)."""
    data = experiment.data
    if not data.train or not data.k_shot:
        raise ConfigError(f"{experiment.source}: self-training labels part of data.train that the K-shot split left "
                          "out; set data.train and data.k_shot (the LM-BFF protocol)")
    pool = unlabelled_pool(data, experiment.task, splits.not_for_pool(), size, experiment.train.seed)
    if not pool:
        raise ConfigError(f"{experiment.source}: data.train holds no example outside the K-shot train and dev splits "
                          f"(and the test texts); strategy.pool_size needs a larger training file")
    return pool
