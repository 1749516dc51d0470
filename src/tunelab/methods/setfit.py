"""`setfit`: SetFit (Tunstall et al., 2022) — contrastive pair fine-tuning of a sentence encoder, then a
logistic-regression head on its embeddings. Runs through the SetFit library (`pip install 'tunelab[setfit]'`).

1. Pairs: `num_iterations` rounds (the paper's R); in each, every training sentence is paired with one
   sentence of its own class (target similarity 1) and one of another class (target 0).
2. The encoder (the model's own sentence-transformers pooling; mean pooling for a plain transformer
   folder) trains on the pairs with CosineSimilarityLoss: (cos(u, v) - target)².
3. A logistic-regression head (scikit-learn, L2, `head_c`) is fitted on the embeddings of the training
   sentences, the encoder frozen.

Artifact: `setfit_body/` (the fine-tuned encoder, safetensors, `SentenceTransformer.save`) and
`setfit_head.json` (the head's classes, coefficients and intercepts: no pickle). Prediction computes
the head's probabilities from those numbers (sigmoid for two classes, softmax otherwise), exactly as
scikit-learn's `predict_proba` does for a fitted binary or multinomial model.

`train.epochs`, `train.batch_size` and `train.learning_rate` do not apply: SetFit's recipe has its own
(the paper's defaults below); `train.seed`, `train.eval_batch_size` and `model.max_length` do.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from tunelab.costs import peak_memory_mb
from tunelab.errors import ConfigError
from tunelab.metrics import compute_metrics
from tunelab.methods.registry import register
from tunelab.settings import StrictSettings

BODY_DIR, HEAD_FILE = "setfit_body", "setfit_head.json"
INSTALL_HINT = "strategy 'setfit' needs the SetFit library: pip install 'tunelab[setfit]'"


class SetFitSettings(StrictSettings):
    num_iterations: int = Field(20, gt=0)
    """R: rounds of pair generation; each makes one positive and one negative pair per training sentence."""
    epochs: int = Field(1, gt=0)
    """Passes over the pairs while fine-tuning the encoder."""
    batch_size: int = Field(16, gt=0)
    """Pairs per step of the encoder's fine-tuning."""
    learning_rate: float = Field(2e-5, gt=0)
    """Learning rate of the encoder's fine-tuning (AdamW, linear schedule, 10% warm-up)."""
    head: Literal["logistic_regression"] = "logistic_regression"
    """The classifier on the embeddings: scikit-learn's LogisticRegression, as in the paper."""
    head_c: float = Field(1.0, gt=0)
    """Inverse L2 strength of the logistic-regression head (scikit-learn's C)."""


def import_setfit():
    """The library, imported only here: a missing optional extra is a usage error (exit 2), not a traceback."""
    try:
        import setfit  # noqa: F401
        from sentence_transformers import SentenceTransformer  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"{INSTALL_HINT} ({err})") from None
    return setfit


@register("setfit", "SetFit: contrastive pair fine-tuning of a sentence encoder, then a logistic-regression head")
class SetFitStrategy:
    Settings = SetFitSettings

    def __init__(self, settings: SetFitSettings, experiment, label_names: list[str] | None):
        self.settings, self.experiment, self.label_names = settings, experiment, label_names or []

    def check(self) -> None:
        if self.experiment.task.type != "classification":
            raise ConfigError(f"strategy 'setfit' needs task.type=classification (single sentences), "
                              f"not {self.experiment.task.type}")
        import_setfit()

    def fit(self, splits, run_dir: Path):
        from transformers import set_seed

        setfit = import_setfit()
        set_seed(self.experiment.train.seed)
        body = self.load_body(self.experiment.model.name)
        started = time.perf_counter()
        pairs, steps = self.train_body(setfit, body, splits.train)
        body_seconds = time.perf_counter() - started
        head = fit_head(body_embeddings(body, splits.train, self.experiment), splits.train, self.label_names, self.settings)
        seconds = time.perf_counter() - started
        predictor = SetFitPredictor(self, body, head)
        trainable = sum(p.numel() for p in body.parameters()) + head.coef.size + head.intercept.size
        costs = {
            "trainable_params": trainable, "total_params": trainable, "trainable_percent": 100.0,
            "train_seconds": seconds, "body_train_seconds": body_seconds, "train_pairs": pairs, "steps": steps,
            "epochs": self.settings.epochs, "train_examples_per_second": pairs * self.settings.epochs / max(body_seconds, 1e-9),
            "device": str(body.device), "peak_memory_mb": peak_memory_mb(body.device),
        }
        if splits.dev:  # no checkpoint is chosen on dev: the score is for the sweep's search and the report
            costs["best_dev"] = self.score(predictor, splits.dev)
        return predictor, costs

    def load_body(self, name: str):
        """A SentenceTransformer from a local folder (an embedded model's, a run's `setfit_body/`): never the hub."""
        from sentence_transformers import SentenceTransformer

        from tunelab.models import resolve_device, resolve_model_path

        path = resolve_model_path(name)
        if not Path(path).is_dir():
            raise ConfigError(f"strategy 'setfit' loads model.name={name!r} from a local folder (an embedded model or a "
                              f"directory); the hub is not used")
        device = resolve_device(self.experiment.model.device)
        body = SentenceTransformer(path, device=str(device), local_files_only=True, trust_remote_code=False)
        body.max_seq_length = self.experiment.model.max_length
        return body

    def train_body(self, setfit, body, train: list[dict]) -> tuple[int, int]:
        """Contrastive fine-tuning through SetFit's Trainer (pairs and loss are the library's); the head comes after."""
        from datasets import Dataset

        ids = {name: i for i, name in enumerate(self.label_names)}
        data = Dataset.from_dict({"text": [e["text"] for e in train], "label": [ids[e["label"]] for e in train]})
        s = self.settings
        model = setfit.SetFitModel(model_body=body, model_head=None)
        with tempfile.TemporaryDirectory() as scratch:  # SetFit wants an output folder; it saves nothing with save_strategy=no
            args = setfit.TrainingArguments(
                output_dir=scratch, batch_size=s.batch_size, num_epochs=s.epochs, num_iterations=s.num_iterations,
                body_learning_rate=s.learning_rate, max_length=self.experiment.model.max_length,
                seed=self.experiment.train.seed, report_to="none", save_strategy="no", show_progress_bar=False,
            )
            trainer = setfit.Trainer(model=model, args=args, train_dataset=data)
            body_args = trainer.args  # train_embeddings only: the head is ours (saved without pickle)
            parameters = trainer.dataset_to_parameters(data)
            trainer.train_embeddings(*parameters, args=body_args)
        return len(trainer.st_trainer.train_dataset), int(trainer.st_trainer.state.global_step)

    def score(self, predictor, examples: list[dict]) -> dict:
        outputs = predictor.predict(examples)
        return compute_metrics(self.experiment.metrics, [o["prediction"] for o in outputs], [e["label"] for e in examples],
                               labels=self.label_names)

    def load(self, run_dir: Path):
        import_setfit()
        body = self.load_body(str(Path(run_dir) / BODY_DIR))
        return SetFitPredictor(self, body, LogisticHead.read(Path(run_dir) / HEAD_FILE))


class LogisticHead:
    """A fitted logistic regression as plain numbers: classes (label names), coef (C', D), intercept (C',)."""

    def __init__(self, classes: list[str], coef: np.ndarray, intercept: np.ndarray):
        self.classes, self.coef, self.intercept = classes, np.asarray(coef, dtype=np.float64), np.asarray(intercept, dtype=np.float64)

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, D) → (N, C): sigmoid of the one decision for two classes, softmax over C decisions otherwise."""
        decision = embeddings.astype(np.float64) @ self.coef.T + self.intercept  # (N, C')
        if len(self.classes) == 2:
            positive = 1.0 / (1.0 + np.exp(-decision[:, 0]))
            return np.stack([1.0 - positive, positive], axis=1)
        decision -= decision.max(axis=1, keepdims=True)
        exp = np.exp(decision)
        return exp / exp.sum(axis=1, keepdims=True)

    def write(self, path: Path) -> None:
        data = {"classes": self.classes, "coef": self.coef.tolist(), "intercept": self.intercept.tolist()}
        Path(path).write_text(json.dumps(data) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> "LogisticHead":
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(data["classes"], np.array(data["coef"]), np.array(data["intercept"]))


def fit_head(embeddings: np.ndarray, train: list[dict], label_names: list[str], settings: SetFitSettings) -> LogisticHead:
    from sklearn.linear_model import LogisticRegression

    present = [name for name in label_names if any(e["label"] == name for e in train)]
    if len(present) < 2:
        raise ConfigError("strategy 'setfit' needs training examples of at least two labels")
    model = LogisticRegression(C=settings.head_c, max_iter=1000)
    model.fit(embeddings, [e["label"] for e in train])
    return LogisticHead([str(c) for c in model.classes_], model.coef_, model.intercept_)


def body_embeddings(body, examples: list[dict], experiment) -> np.ndarray:
    texts = [e["text"] for e in examples]
    return body.encode(texts, batch_size=experiment.train.eval_batch_size, convert_to_numpy=True, show_progress_bar=False)


class SetFitPredictor:
    def __init__(self, strategy: SetFitStrategy, body, head: LogisticHead):
        self.strategy, self.body, self.head = strategy, body, head

    def predict(self, examples: list[dict]) -> list[dict]:
        if not examples:
            return []
        probs = self.head.probabilities(body_embeddings(self.body, examples, self.strategy.experiment))  # (N, C)
        labels = self.strategy.label_names
        rows = []
        for row in probs:
            scores = {name: 0.0 for name in labels}  # a label absent from training gets probability 0
            scores.update(zip(self.head.classes, row.tolist()))
            rows.append({"prediction": self.head.classes[int(row.argmax())], "scores": scores})
        return rows

    def save(self, directory: Path) -> None:
        self.body.save(str(Path(directory) / BODY_DIR), safe_serialization=True)
        self.head.write(Path(directory) / HEAD_FILE)
