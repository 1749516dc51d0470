"""`distill`: a small student learns a teacher's soft labels (Hinton et al., 2015) on unlabelled text.

    strategy: {name: distill, teacher: runs/sst2/pet-k16-seed13}          # a finished run directory
    sweep.strategies: [pet, {name: distill, teacher: pet, model: {name: minilm-l6}}]   # an earlier entry

1. The texts: the K-shot train split's own texts plus `pool_size` texts of the training file, read for
   their text only (`tunelab.data.pool`: no gold label is read; the K-shot dev split is left out; the
   test file is never opened).
2. The teacher (a finished run's predictor) labels them: its per-label scores as a distribution p
   (probabilities as they are; other scores through a softmax; none: its prediction one-hot).
3. The student — `model.name` under a classification head with any model change (`train`, `delta`, as
   in `classifier`; default `full`) — minimises T² · KL(p_T ‖ softmax(z / T)) with p_T ∝ p^(1/T), the
   teacher's distribution at temperature T (`temperature`; 1: as it is). The K-shot dev split (gold
   labels) picks the best epoch, as for every other strategy.

In a sweep `teacher:` may name an earlier entry: each distill cell reads that entry's cell of the same K
and seed, which the sweep writes into `teacher_cell` (and runs first, on Ray too). An `ensemble` entry
teaches like any other: its cell's predictor loads the members' saved models and averages them. The
artifact is the student's alone (the change's own): evaluate/predict never need the teacher.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from tunelab.errors import ConfigError, UserError
from tunelab.methods.any_change import AnyChangeStrategy, ClassifierSettings
from tunelab.methods.classifier import ClassifierPredictor, train_costs
from tunelab.methods.registry import register
from tunelab.settings import StrictSettings


class DistillSettings(StrictSettings):
    teacher: str
    """A finished run directory (relative to where tunelab runs), or in a sweep the id of an earlier entry."""
    teacher_cell: str | None = None
    """Written by the sweep: the teacher entry's cell of this cell's K and seed (not for users to set)."""
    pool_size: int = Field(1000, ge=0)
    """Texts of the training file (labels never read) the teacher labels, besides the K-shot train texts."""
    temperature: float = Field(2.0, gt=0)
    """T of the soft labels: p_T ∝ p^(1/T); the loss is T² · KL(p_T ‖ softmax(student logits / T))."""
    train: str = "full"
    """The student's model change (`head`, `full`, `lora`, ...), as `classifier`'s `train`."""
    delta: dict = Field(default_factory=dict)
    """Settings of that model change."""


@register("distill", "a student (model.name with a head, any model change) learns a teacher run's soft labels on unlabelled text",
          family="distillation")
class DistillStrategy:
    Settings = DistillSettings
    uses_prompt = False
    teacher_setting = "teacher"
    """The setting that may name an earlier sweep entry; the sweep links the cells (sweep/expand.py)."""

    def __init__(self, settings: DistillSettings, experiment, label_names: list[str] | None):
        self.settings, self.experiment, self.label_names = settings, experiment, label_names or []
        self.student = AnyChangeStrategy(student_settings(settings), experiment, label_names)

    @classmethod
    def check_pairing(cls, settings: DistillSettings, experiment) -> None:
        AnyChangeStrategy.check_pairing(student_settings(settings), experiment)

    def check(self) -> None:
        self.student.check()
        train = self.experiment.train
        if train.label_smoothing or train.rdrop_alpha or train.adversarial is not None:
            raise ConfigError("strategy 'distill' trains on the teacher's soft labels: train.label_smoothing, "
                              "train.rdrop_alpha and train.adversarial do not apply; remove them")
        if self.settings.teacher_cell is None:  # a run directory: checked now, before any weight loads
            self.read_teacher(self.teacher_dir(None))

    # --- the teacher --------------------------------------------------------------------------

    def teacher_dir(self, run_dir: Path | None) -> Path:
        if self.settings.teacher_cell is not None:  # a sweep cell: the teacher cell sits beside this one
            return Path(run_dir).parent / self.settings.teacher_cell
        path = Path(self.settings.teacher).expanduser()
        if not path.is_dir():
            raise ConfigError(f"strategy.teacher: {self.settings.teacher!r} is not a run directory; give a finished run "
                              f"directory (`tunelab run ... --out DIR`), or in a sweep the id of an earlier entry")
        return path

    def read_teacher(self, directory: Path):
        """(config, strategy) of the teacher run; its labels must be the student's, in the same order."""
        from tunelab.run import METRICS_FILE, read_run

        if not (directory / METRICS_FILE).is_file():
            raise UserError(f"the teacher {directory} has not finished (no {METRICS_FILE}); in a sweep its cell runs first: "
                            f"see its log or .failed.json, then run `tunelab compare` again")
        config, strategy = read_run(directory)
        if list(config.task.label_names or []) != list(self.label_names):
            raise ConfigError(f"strategy.teacher {directory} labels {config.task.label_names}, the student "
                              f"{self.label_names}: distil from a run of the same task")
        return config, strategy

    def teacher_targets(self, directory: Path, texts: list[dict]) -> list[list[float]]:
        """The teacher's distribution over label_names for every text, softened at the temperature."""
        from tunelab.run import load_predictor

        _, strategy = self.read_teacher(directory)
        outputs = load_predictor(strategy, directory).predict(texts)
        return [soften(distribution(output, self.label_names), self.settings.temperature) for output in outputs]

    # --- training -----------------------------------------------------------------------------

    def fit(self, splits, run_dir: Path):
        from transformers import set_seed

        from tunelab.costs import parameter_costs
        from tunelab.data.pool import text_only, unlabelled_pool

        exp = self.experiment
        teacher = self.teacher_dir(run_dir)
        pool = unlabelled_pool(exp.data, exp.task, splits.not_for_pool(), self.settings.pool_size, exp.train.seed)
        texts = [text_only(e, exp.task) for e in splits.train + pool]  # no gold label from here on
        started = time.perf_counter()
        targets = self.teacher_targets(teacher, texts)
        teacher_seconds = time.perf_counter() - started
        set_seed(exp.train.seed)  # the new head's initialisation depends on it
        loaded = self.student.load_base()
        model = self.student.prepare(loaded)
        costs = parameter_costs(model)
        stats = self.train_student(model, loaded, texts, targets, splits.dev, run_dir)
        costs.update(train_costs(stats, model))
        costs.update(teacher=self.settings.teacher_cell or str(teacher), teacher_examples=len(texts),
                     teacher_pool=len(pool), teacher_label_seconds=teacher_seconds)
        return ClassifierPredictor(self.student, model, loaded), costs

    def train_student(self, model, loaded, texts: list[dict], targets: list[list[float]], dev: list[dict], run_dir: Path):
        from tunelab.readouts.classification import encode_classification
        from tunelab.train import train_model

        exp = self.experiment
        encode = lambda examples: encode_classification(loaded.tokenizer, examples, self.label_names, exp.model.max_length)
        features = [dict(f, teacher_probs=p) for f, p in zip(encode(texts), targets)]
        return train_model(
            SoftTargetModel(model, self.settings.temperature), loaded.tokenizer, features, encode(dev), exp.train, run_dir,
            score_dev=self.student.score, metric_for_best=exp.train.metric_for_best or exp.metrics[0],
            collator=SoftTargetCollator(loaded.tokenizer), dev_readout=self.student.dev_readout(),
        )

    def load(self, run_dir: Path):
        return self.student.load(run_dir)


def student_settings(settings: DistillSettings) -> ClassifierSettings:
    return ClassifierSettings(train=settings.train, delta=settings.delta)


def distribution(output: dict, label_names: list[str]) -> list[float]:
    """A predictor's output as a distribution over label_names (see the module's docstring)."""
    scores = output.get("scores")
    if not scores or any(name not in scores for name in label_names):
        return [1.0 if name == output["prediction"] else 0.0 for name in label_names]
    values = [float(scores[name]) for name in label_names]
    if all(v >= 0 for v in values) and abs(sum(values) - 1.0) < 1e-3:
        return [v / sum(values) for v in values]
    top = max(values)
    exp = [math.exp(v - top) for v in values]
    return [v / sum(exp) for v in exp]


def soften(probs: list[float], temperature: float) -> list[float]:
    """p_T ∝ p^(1/T): the distribution of the teacher's logits divided by T (log p = logits + const)."""
    from tunelab.calibration import temper

    return temper(np.asarray([probs]), temperature)[0].tolist()


class SoftTargetModel(torch.nn.Module):
    """The student under the distillation loss; with gold `labels` instead (the dev split) plain cross-entropy.

    Its forward takes no **kwargs on purpose: the Trainer then treats the loss as a batch mean (see
    train.loss_honours_item_count). Parameters are the student's own, trained in place.
    """

    def __init__(self, student: torch.nn.Module, temperature: float):
        super().__init__()
        self.student, self.temperature = student, temperature

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, teacher_probs=None, labels=None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        logits = self.student(**inputs).logits  # (B, L)
        loss = None
        if teacher_probs is not None:
            t = self.temperature
            log_student = torch.log_softmax(logits.float() / t, dim=-1)
            loss = torch.nn.functional.kl_div(log_student, teacher_probs.float(), reduction="batchmean") * t * t
        elif labels is not None:
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


class SoftTargetCollator:
    """Pads the token features (dynamic padding) and stacks the teacher's distributions: (B, L)."""

    def __init__(self, tokenizer):
        from transformers import DataCollatorWithPadding

        self.pad = DataCollatorWithPadding(tokenizer)

    def __call__(self, features: list[dict]) -> dict:
        probs = [f["teacher_probs"] for f in features if "teacher_probs" in f]
        batch = self.pad([{k: v for k, v in f.items() if k != "teacher_probs"} for f in features])
        if probs:
            batch["teacher_probs"] = torch.tensor(probs, dtype=torch.float32)
        return batch
