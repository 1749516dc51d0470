"""Shared machinery of the strategies that read labels out of a classification head.

How the model changes is a model change (`tunelab.model_changes`): `head`, `full`, `partial`,
`bitfit` and `adapter` are this read-out with the model change of the same name (`change_name`),
their flat settings being the change's settings; `classifier` pairs the head with any change
(`strategy.train`, `strategy.delta`). The PEFT strategies override `prepare` and the artifact I/O
(`peft_common.PeftStrategy`). Everything else — loading, tokenising, training, predicting, costs
— lives here once.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import BaseModel

from tunelab.batching import by_length
from tunelab.costs import model_device, parameter_costs, peak_memory_mb
from tunelab.errors import ConfigError
from tunelab.metrics import compute_metrics
from tunelab.model_changes import Target, get_model_change
from tunelab.model_changes.delta import DELTA_FILE  # noqa: F401 (re-exported: artifact name)
from tunelab.model_changes.selection import HEAD_MODULES  # noqa: F401 (re-exported)
from tunelab.models import LoadedModel, load_model
from tunelab.outputs import label_outputs
from tunelab.readouts.classification import encode_classification
from tunelab.readouts.tokens import TAGGING, TokenPredictor, check_tagging, head_architecture, train_tagger
from tunelab.settings import NoSettings
from tunelab.train import train_model


class ClassifierStrategy:
    """Base of head-readout strategies: a model change (`change_name`) under a classification head."""

    Settings: type[BaseModel] = NoSettings
    change_name: str | None = None
    """The model change this strategy is a shorthand for; its settings are the strategy's own."""

    def __init__(self, settings: BaseModel, experiment, label_names: list[str] | None):
        self.settings, self.experiment, self.label_names = settings, experiment, label_names or []
        if self.tagging:  # task.label_names may name the entity types: the head reads the full IOB2 tag set
            from tunelab.data.tokens import tag_names

            self.label_names = tag_names(self.label_names)

    @property
    def tagging(self) -> bool:
        """Token classification: a tag per word from a token-classification head (`readouts/tokens.py`)."""
        return self.experiment.task.type == TAGGING

    # --- the model change ---------------------------------------------------------------------

    @property
    def change(self):
        return get_model_change(self.change_name).change

    @property
    def change_settings(self) -> BaseModel:
        return self.settings

    def target(self) -> Target:
        return Target("head", self.experiment, head_architecture(self.experiment), ("strategy",), len(self.label_names))

    def prepare(self, loaded: LoadedModel) -> torch.nn.Module:
        """Choose the trainable parameters (or wrap the model); return the model to train."""
        return self.change.apply(loaded, self.change_settings, self.target())

    def save_artifact(self, model: torch.nn.Module, directory: Path, loaded: LoadedModel) -> None:
        self.change.save(model, Path(directory), loaded, self.change_settings)

    def check(self) -> None:
        if self.experiment.task.type not in ("classification", "pair_classification", TAGGING):
            raise ConfigError(
                f"strategy '{self.strategy_name}' needs a classification task, not task.type={self.experiment.task.type}"
            )
        if self.tagging:
            check_tagging(self.experiment, self.strategy_name)
        if self.change_name is not None:
            self.change.check(self.change_settings, self.target())

    # --- shared flow --------------------------------------------------------------------------

    def load_base(self, name: str | None = None) -> LoadedModel:
        """The base model (trained weights stay fp32 under `auto`), or a saved model directory `name`."""
        cfg = self.experiment.model
        return load_model(
            name or cfg.name, head_architecture(self.experiment), len(self.label_names), device=cfg.device,
            dtype=cfg.dtype if name else training_dtype(cfg.dtype),
            trust_remote_code=cfg.trust_remote_code, label_names=self.label_names, pooling=cfg.pooling,
        )

    def fit(self, splits, run_dir: Path):
        from transformers import set_seed

        set_seed(self.experiment.train.seed)  # the new head's initialisation depends on it
        loaded = self.load_base()
        model = self.prepare(loaded)
        costs = parameter_costs(model)
        if costs["trainable_params"] == 0:
            raise ConfigError(f"strategy '{self.strategy_name}' leaves no parameter to train; check its settings")
        stats = self.train(model, loaded, splits, run_dir)
        costs.update(train_costs(stats, model))
        if hasattr(loaded.model, "config"):  # the read-out's pooling as applied (a sweep may search model.pooling)
            from tunelab.pooling import pooling_of

            costs["pooling"] = pooling_of(None, loaded.model.config)
        return self.predictor(model, loaded), costs

    def predictor(self, model: torch.nn.Module, loaded: LoadedModel):
        return (TokenPredictor if self.tagging else ClassifierPredictor)(self, model, loaded)

    def train(self, model, loaded: LoadedModel, splits, run_dir: Path):
        exp = self.experiment
        if self.tagging:
            return train_tagger(model, loaded.tokenizer, splits, exp, self.label_names, run_dir)
        encode = lambda examples: encode_classification(loaded.tokenizer, examples, self.label_names, exp.model.max_length)
        metric = exp.train.metric_for_best or exp.metrics[0]
        return train_model(
            model, loaded.tokenizer, encode(splits.train), encode(splits.dev), exp.train, run_dir,
            score_dev=lambda logits, labels: self.score(logits, labels), metric_for_best=metric,
            dev_readout=self.dev_readout(),
        )

    def dev_readout(self):
        """Softmax of the head's logits: the same argmax `score` reads, as distributions for the held-out dev score."""
        from tunelab.held_out_dev import DevReadout

        def probabilities(logits, label_ids):
            logits = logits[0] if isinstance(logits, tuple) else logits
            return torch.as_tensor(logits).float().softmax(-1).numpy(), label_ids

        return DevReadout(probabilities, self.score, list(self.label_names))

    def score(self, logits, label_ids) -> dict:
        logits = logits[0] if isinstance(logits, tuple) else logits
        predictions = [self.label_names[i] for i in logits.argmax(-1)]
        references = [self.label_names[i] for i in label_ids]
        return compute_metrics(self.experiment.metrics, predictions, references, labels=self.label_names)

    def load(self, run_dir: Path):
        loaded, model = self.change.load(Path(run_dir), self.load_base, self.change_settings, self.target())
        return self.predictor(model, loaded)


def training_dtype(dtype: str) -> str:
    """Trained weights stay fp32 under `auto`; on CUDA the Trainer computes in bf16 (mixed precision)."""
    return "float32" if dtype == "auto" else dtype


def train_costs(stats, model) -> dict:
    held_out = {"held_out_dev": stats.held_out_dev, "held_out_epochs": stats.held_out_epochs} if stats.held_out_dev else {}
    return held_out | {
        "train_seconds": stats.train_seconds,
        "train_tokens": stats.train_tokens,
        "train_tokens_per_second": stats.tokens_per_second,
        "train_examples_per_second": stats.examples_per_second,
        "steps": stats.steps,
        "epochs": stats.epochs,
        "best_dev": stats.best_dev,
        "best_epoch": stats.best_epoch,
        "stopped_early": stats.stopped_early,
        "world_size": stats.world_size,
        "ranks": stats.ranks,
        "peak_memory_mb": peak_memory_mb(model_device(model)),
        "device": str(model_device(model)),
    }


class ClassifierPredictor:
    """Labels examples with the model's classification head; batches sorted by length."""

    def __init__(self, strategy: ClassifierStrategy, model: torch.nn.Module, loaded: LoadedModel):
        self.strategy, self.model, self.loaded = strategy, model, loaded

    def predict(self, examples: list[dict]) -> list[dict]:
        from transformers import DataCollatorWithPadding

        exp = self.strategy.experiment
        labels = self.strategy.label_names
        features = encode_classification(self.loaded.tokenizer, [dict(e, label=None) for e in examples], labels, exp.model.max_length)
        collate = DataCollatorWithPadding(self.loaded.tokenizer)
        device = model_device(self.model)

        def run(chunk: list[dict]) -> list[dict]:
            batch = {k: v.to(device) for k, v in collate(chunk).items()}
            probs = self.model(**batch).logits.float().softmax(-1)  # (B, L)
            return label_outputs(probs.cpu().numpy(), labels)

        self.model.eval()
        with torch.inference_mode():
            return by_length(features, lambda f: len(f["input_ids"]), exp.train.eval_batch_size, run)

    def save(self, directory: Path) -> None:
        self.strategy.save_artifact(self.model, directory, self.loaded)
