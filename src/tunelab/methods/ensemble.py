"""`ensemble`: average the label distributions of other sweep entries (soft voting).

    sweep.strategies: [pet, {name: setfit, id: setfit_mpnet, model: {name: mpnet-base}},
                       {name: ensemble, settings: {members: [pet, setfit_mpnet]}}]

Models that read a sentence differently — a prompted causal LM and a contrastively tuned sentence encoder —
make different mistakes, and the mean of their probabilities is often right where one of them is not. Each
ensemble cell reads its members' cells of the same K and seed (the sweep links them and runs them first,
on Ray too): their label scores on the K-shot dev split (`dev_predictions.jsonl`) and on the test split and
its perturbed copy. It trains nothing and loads no weights, so it works with `sweep.save_artifacts: false`.
Scores become a distribution as distill reads a teacher's: probabilities as they are, other scores through a
softmax, none: the prediction one-hot.

Members are calibrated before they are averaged (`calibration: temperature`, the default): each member's
distributions are rescaled by one temperature (tunelab.calibration) that maximises the likelihood of the K-shot
dev split's gold labels under them. Without it the mean is a vote weighted by confidence, not by accuracy: on
SST-2 a prompted SmolLM2 gives its label probability 0.997 on a typical sentence and SetFit's logistic head
(L2, unit-length embeddings) never more than 0.88, so the "ensemble" was pet overruled only where pet was
unsure — its dev score pet's. The dev score is held out from the temperatures as tunelab.held_out_dev holds
out epochs: the dev split is dealt into the same folds, and each fold is scored with temperatures fitted on
the others; the temperatures kept for test are fitted on the whole split (costs.json: `member_temperatures`).
`calibration: none` averages the distributions as they are (its dev score is then that of the averaged dev
outputs). So the dev split chooses between it and its members like between any two strategies.

Its costs are its members' together: every member must be trained and served (parameters and training time
summed, evaluation time summed, the larger peak memory). With `sweep.save_artifacts: true` the cell keeps
`ensemble.json` (its members' cells and weights), and `tunelab predict` on it loads each member's saved
model beside it and averages them on new text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from tunelab.calibration import fit_temperature, temper
from tunelab.data.validate import CLASSIFICATION
from tunelab.errors import ConfigError, UserError
from tunelab.methods.distill import distribution
from tunelab.methods.registry import register
from tunelab.outputs import label_outputs
from tunelab.settings import StrictSettings

ENSEMBLE_FILE = "ensemble.json"
OUTPUT_FILES = ("dev_predictions.jsonl", "predictions.jsonl", "perturbed_predictions.jsonl")
SUMMED_COSTS = ("trainable_params", "total_params", "train_seconds", "eval_seconds")


class EnsembleSettings(StrictSettings):
    members: list[str] = Field(min_length=2)
    """Ids of earlier entries of the sweep whose label distributions are averaged."""
    weights: list[float] | None = None
    """One non-negative weight per member (normalised to sum to 1); none: equal weights."""
    calibration: Literal["temperature", "none"] = "temperature"
    """temperature: each member rescaled by the temperature that fits the dev labels best before averaging; none: as is."""
    member_cells: list[str] | None = None
    """Written by the sweep: each member entry's cell of this cell's K and seed (not for users to set)."""

    @model_validator(mode="after")
    def weights_fit_members(self):
        if len(set(self.members)) != len(self.members):
            raise ValueError(f"members lists an entry twice: {self.members}")
        if self.weights is not None:
            if len(self.weights) != len(self.members):
                raise ValueError(f"weights has {len(self.weights)} values for {len(self.members)} members; give one each")
            if min(self.weights) < 0 or sum(self.weights) <= 0:
                raise ValueError("weights must be non-negative and not all 0")
        return self

    def normalised_weights(self) -> list[float]:
        weights = self.weights or [1.0] * len(self.members)
        return [w / sum(weights) for w in weights]


@register("ensemble", "the weighted mean of other sweep entries' label distributions (soft voting); trains nothing",
          family="ensemble")
class EnsembleStrategy:
    Settings = EnsembleSettings
    uses_prompt = False
    teacher_setting = "members"
    """The setting that names earlier sweep entries; the sweep links their cells (sweep/expand.py)."""
    linked_setting = "member_cells"
    reads_weights = False
    """It reads its members' stored outputs, not their weights: sweep.save_artifacts may be false."""

    def __init__(self, settings: EnsembleSettings, experiment, label_names: list[str] | None):
        self.settings, self.experiment, self.label_names = settings, experiment, label_names or []

    @classmethod
    def check_pairing(cls, settings: EnsembleSettings, experiment) -> None:
        if experiment.task.type not in CLASSIFICATION:
            raise ConfigError(f"strategy 'ensemble' averages label distributions: it needs a classification task, "
                              f"not task.type={experiment.task.type}")

    @classmethod
    def finished_result_changes(cls, strategy_config: dict, costs: dict) -> list[str]:
        """A cell finished before members were calibrated (no temperatures in its costs) averaged them raw: its
        config reads the same, its results do not mean what this tunelab's ensembles mean (sweep/runner.py)."""
        if strategy_config.get("calibration", "temperature") != "temperature" or "member_temperatures" in costs:
            return []
        return ["it averaged its members uncalibrated (finished by an older tunelab); delete it to re-run it with "
                "members calibrated on dev (it takes seconds), or set `calibration: none` on the entry to keep it"]

    def check(self) -> None:
        self.check_pairing(self.settings, self.experiment)
        if self.settings.member_cells is None:
            raise ConfigError("strategy 'ensemble' runs in a sweep: list it under sweep.strategies after the entries "
                              "it names in settings.members")

    # --- the members ----------------------------------------------------------------------------

    def member_dirs(self, run_dir: Path) -> list[Path]:
        """The members' cells sit beside this one in the sweep directory."""
        return [Path(run_dir).parent / cell for cell in self.settings.member_cells or []]

    def check_member(self, directory: Path) -> None:
        from tunelab.run import METRICS_FILE, read_run_config

        if not (directory / METRICS_FILE).is_file():
            raise UserError(f"the ensemble member {directory} has not finished (no {METRICS_FILE}); its cell runs "
                            f"first: see its log or .failed.json, then run `tunelab compare` again")
        labels = (read_run_config(directory).get("task") or {}).get("label_names")
        if list(labels or []) != list(self.label_names):
            raise ConfigError(f"the ensemble member {directory} labels {labels}, the ensemble {self.label_names}: "
                              f"members must share the task")
        if not (directory / OUTPUT_FILES[0]).is_file():
            raise UserError(f"the ensemble member {directory} has no {OUTPUT_FILES[0]} (it finished before tunelab kept "
                            f"dev outputs); delete that cell directory and run `tunelab compare` again to re-run it")

    def stored_outputs(self, directory: Path) -> "StoredOutputs":
        outputs = {}
        for name in OUTPUT_FILES:
            path = directory / name
            if path.is_file():
                for line in path.read_text(encoding="utf-8").splitlines():
                    row = json.loads(line)
                    outputs[input_key(row, self.experiment.task)] = {k: row[k] for k in ("prediction", "scores") if k in row}
        return StoredOutputs(directory.name, outputs, self.experiment.task)

    # --- fitting: nothing to train ----------------------------------------------------------------

    def fit(self, splits, run_dir: Path):
        directories = self.member_dirs(run_dir)
        for directory in directories:
            self.check_member(directory)
        members = [self.stored_outputs(directory) for directory in directories]
        costs = member_costs(directories)
        temperatures = [1.0] * len(members)  # calibration: none, or no dev split to fit them on
        if self.settings.calibration == "temperature" and splits.dev:
            temperatures = self.calibrate(members, splits.dev, costs, run_dir)
        costs["member_temperatures"] = dict(zip([m.name for m in members], temperatures))
        predictor = EnsemblePredictor(members, self.settings.normalised_weights(), self.label_names,
                                      [d.name for d in directories], temperatures)
        return predictor, costs

    def calibrate(self, members: list["StoredOutputs"], dev: list[dict], costs: dict, run_dir: Path) -> list[float]:
        """Each member's temperature on the whole dev split (kept for test), and the dev score held out from them."""
        from tunelab.held_out_dev import FOLDS, HELD_OUT_FILE, HeldOutDev, stratified_folds

        gold = np.asarray([self.label_names.index(e["label"]) for e in dev])
        dists = [member_distributions(member, dev, self.label_names) for member in members]
        weights = self.settings.normalised_weights()
        temperatures = [fit_temperature(d, gold) for d in dists]
        fold = stratified_folds(gold, self.experiment.train.seed, min(FOLDS, len(gold)))
        held_out = cross_fitted_mean(dists, weights, gold, fold)
        costs["best_dev"] = self.score(weighted_mean(dists, weights, temperatures), dev)
        costs["held_out_dev"] = self.score(held_out, dev)
        metric = self.experiment.train.metric_for_best or self.experiment.metrics[0]
        HeldOutDev(costs["held_out_dev"], held_out, fold, [], gold.tolist()).write(
            Path(run_dir) / HELD_OUT_FILE, metric, [], list(self.label_names))
        return temperatures

    def score(self, probabilities: np.ndarray, examples: list[dict]) -> dict:
        """The experiment's metrics of the (N, L) distributions' best labels against the examples' gold labels."""
        from tunelab.metrics import compute_metrics

        predictions = [self.label_names[i] for i in probabilities.argmax(axis=1)]
        return compute_metrics(self.experiment.metrics, predictions, [e["label"] for e in examples], labels=self.label_names)

    def load(self, run_dir: Path):
        """For `tunelab predict`/`evaluate`: each member's saved model, loaded from its cell beside this one."""
        from tunelab.run import load_predictor, read_run

        saved = json.loads((Path(run_dir) / ENSEMBLE_FILE).read_text(encoding="utf-8"))
        members = []
        for cell in saved["members"]:
            directory = Path(run_dir).parent / cell
            _, strategy = read_run(directory)
            members.append(load_predictor(strategy, directory))
        return EnsemblePredictor(members, saved["weights"], self.label_names, saved["members"], saved.get("temperatures"))


def member_distributions(member, examples: list[dict], label_names: list[str]) -> np.ndarray:
    """(N, L): a member's label distributions for the examples."""
    return np.asarray([distribution(o, label_names) for o in member.predict(examples)], dtype=np.float64)


def weighted_mean(dists: list[np.ndarray], weights: list[float], temperatures: list[float]) -> np.ndarray:
    """(N, L): the weighted mean of the members' distributions, each first tempered by its temperature."""
    return sum(w * temper(d, t) for d, w, t in zip(dists, weights, temperatures))


def cross_fitted_mean(dists: list[np.ndarray], weights: list[float], gold: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """(D, L): each dev example's ensemble distribution under temperatures fitted on the other folds only."""
    combined = np.empty_like(dists[0])
    for f in np.unique(fold):
        rest, this = fold != f, fold == f
        temperatures = [fit_temperature(d[rest], gold[rest]) for d in dists]
        combined[this] = weighted_mean([d[this] for d in dists], weights, temperatures)
    return combined


def input_key(example: dict, task) -> str:
    """What identifies an example to the members: its input texts only (never its label)."""
    from tunelab.data.perturb import text_keys

    return json.dumps([example.get(key) for key in text_keys(task)], ensure_ascii=False)


def member_costs(directories: list[Path]) -> dict:
    """Every member is trained and served: their parameters and times add up; memory is the larger peak."""
    from tunelab.run import COSTS_FILE

    costs = [json.loads((d / COSTS_FILE).read_text(encoding="utf-8")) for d in directories]
    total = {key: sum(c.get(key) or 0 for c in costs) for key in SUMMED_COSTS}
    total["trainable_percent"] = 100.0 * total["trainable_params"] / max(total["total_params"], 1)
    peaks = [c["peak_memory_mb"] for c in costs if isinstance(c.get("peak_memory_mb"), (int, float))]
    if peaks:
        total["peak_memory_mb"] = max(peaks)
    total["member_cells"] = [d.name for d in directories]  # not "members": pet_ensemble's costs use that for its patterns
    total["member_eval_seconds"] = total.pop("eval_seconds")  # the runner times the ensemble's own look-ups
    return total


class StoredOutputs:
    """A finished member cell's outputs, looked up by input: a 'predictor' for the examples it labelled."""

    def __init__(self, name: str, outputs: dict[str, dict], task):
        self.name, self.outputs, self.task = name, outputs, task

    def predict(self, examples: list[dict]) -> list[dict]:
        missing = [e for e in examples if input_key(e, self.task) not in self.outputs]
        if missing:
            raise UserError(f"the ensemble member {self.name} has no stored output for {len(missing)} example(s) "
                            f"(e.g. {input_key(missing[0], self.task)[:120]}): members must run on the same data; "
                            f"run them again with the ensemble's data settings")
        return [self.outputs[input_key(e, self.task)] for e in examples]


class EnsemblePredictor:
    def __init__(self, members: list, weights: list[float], label_names: list[str], member_names: list[str],
                 temperatures: list[float] | None = None):
        self.members, self.weights, self.label_names, self.member_names = members, weights, label_names, member_names
        self.temperatures = temperatures or [1.0] * len(members)  # an ensemble saved before calibration: none

    def predict(self, examples: list[dict]) -> list[dict]:
        if not examples:
            return []
        dists = [member_distributions(member, examples, self.label_names) for member in self.members]
        return label_outputs(weighted_mean(dists, self.weights, self.temperatures), self.label_names)

    def save(self, directory: Path) -> None:
        saved = {"members": self.member_names, "weights": self.weights, "temperatures": self.temperatures}
        (Path(directory) / ENSEMBLE_FILE).write_text(json.dumps(saved, indent=2) + "\n", encoding="utf-8")
