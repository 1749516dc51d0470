"""`span`: extractive question answering with a new span head and any model change (`task.type: extractive_qa`).

The read-out is `tunelab.readouts.span` (start/end logits per token, sliding windows over long
contexts, the best span across windows); how the model changes is named by `strategy.train`
(`head`, `full`, `partial`, `bitfit`, `adapter`, `lora`, `ia3`, ... : `tunelab.model_changes`),
its settings under `strategy.delta`, as for `classifier`::

    task: {type: extractive_qa}
    strategy: {name: span, train: lora, delta: {r: 8}, stride: 128, max_answer_length: 30}
    metrics: [squad_f1, squad_em]

Training follows the SQuAD recipe: every window of a training question is an example, labelled
with the answer's first and last token, or [CLS] when the window does not hold the whole answer.
Dev scoring decodes whole questions (all their windows) with the model being trained, so the best
checkpoint is chosen on the same EM/F1 as the test. The artifact is the model change's own.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from tunelab.batching import by_length
from tunelab.costs import model_device, parameter_costs
from tunelab.errors import ConfigError
from tunelab.methods.classifier import train_costs, training_dtype
from tunelab.methods.registry import register
from tunelab.metrics import compute_metrics
from tunelab.model_changes import Target, resolve_change
from tunelab.models import LoadedModel
from tunelab.readouts.span import Window, best_answer, encode_windows
from tunelab.settings import StrictSettings

UNSUPPORTED_TRAINING = ("label_smoothing", "rdrop_alpha", "adversarial", "augment")
"""`train:` keys written for a label read-out (a class distribution, sentence texts): no meaning for spans."""


class SpanSettings(StrictSettings):
    train: str = "full"
    """The model change: `head`, `full`, `partial`, `bitfit`, `adapter`, a PEFT method (`lora`, `ia3`, ...)."""
    delta: dict = Field(default_factory=dict)
    """Settings of the model change named by `train`; checked by its own schema."""
    stride: int | None = Field(128, ge=0)
    """Tokens shared by neighbouring windows over a context longer than model.max_length (an answer cut by
    one window's edge lies whole in the next when it is at most this long). null: no windows, and a
    context that does not fit is an error."""
    max_answer_length: int = Field(30, gt=0)
    """Longest answer, in tokens, the decoder considers."""
    n_best: int = Field(20, gt=0)
    """Highest start and end logits of each window paired when decoding."""


class SpanTarget(Target):
    """A span head: PEFT's question-answering wrapper, and the QA architecture for settings checks."""

    @property
    def task_type(self) -> str:
        return "QUESTION_ANS"

    def skeleton(self) -> torch.nn.Module:
        from transformers import AutoConfig, AutoModelForQuestionAnswering

        from tunelab.models import resolve_model_path, with_hub_errors

        cfg = self.experiment.model
        path = resolve_model_path(cfg.name)
        config = with_hub_errors(path, lambda **hub: AutoConfig.from_pretrained(path, trust_remote_code=cfg.trust_remote_code, **hub))
        with torch.device("meta"):
            return AutoModelForQuestionAnswering.from_config(config, trust_remote_code=cfg.trust_remote_code)


@register("span", "extractive QA: a new span head over sliding windows with any model change (strategy.train)")
class SpanStrategy:
    Settings = SpanSettings

    def __init__(self, settings: SpanSettings, experiment, label_names: list[str] | None):
        self.settings, self.experiment = settings, experiment

    # --- the model change ---------------------------------------------------------------------

    @classmethod
    def check_pairing(cls, settings: SpanSettings, experiment) -> None:
        """The model change exists, pairs with a new head and takes `delta` (a sweep checks every cell so)."""
        resolve_change(experiment, cls.strategy_name, settings.train, settings.delta, "span")

    @functools.cached_property
    def resolved(self):
        return resolve_change(self.experiment, self.strategy_name, self.settings.train, self.settings.delta, "span")

    @property
    def change(self):
        return self.resolved[0].change

    def target(self) -> SpanTarget:
        return SpanTarget("head", self.experiment, "question_answering", ("strategy", "delta"))

    # --- checks (no weights) ------------------------------------------------------------------

    def check(self) -> None:
        exp = self.experiment
        if exp.task.type != "extractive_qa":
            raise ConfigError(f"{exp.locate('task', 'type')}: strategy 'span' reads answers out of a context and needs "
                              f"task.type extractive_qa, not {exp.task.type}")
        for key in UNSUPPORTED_TRAINING:
            if getattr(exp.train, key):
                raise ConfigError(f"{exp.locate('train', key)}: train.{key} applies to label read-outs (a classification "
                                  f"head, pet's verbalizer), not to the span head of extractive QA; remove it")
        self.change.check(self.resolved[1], self.target())

    def check_splits(self, splits) -> None:
        """Every split windows cleanly (a question leaving room, a context that fits without a stride)."""
        for examples in (splits.train, splits.dev, splits.test):
            self.encode(self.tokenizer, examples)

    @functools.cached_property
    def tokenizer(self):
        from tunelab.models import load_tokenizer, resolve_model_path

        return load_tokenizer(resolve_model_path(self.experiment.model.name), self.experiment.model.trust_remote_code)

    def encode(self, tokenizer, examples: list[dict]) -> tuple[list[dict], list[Window]]:
        return encode_windows(tokenizer, examples, self.experiment.model.max_length, self.settings.stride)

    # --- training and loading -----------------------------------------------------------------

    def load_base(self, name: str | None = None) -> LoadedModel:
        """The base model with a new span head (fp32 under `auto` to train), or a saved model directory `name`."""
        from transformers import AutoModelForQuestionAnswering

        from tunelab.models import load_tokenizer, resolve_device, resolve_dtype, resolve_model_path, with_hub_errors

        cfg = self.experiment.model
        path = resolve_model_path(name or cfg.name)
        device = resolve_device(cfg.device)
        dtype = resolve_dtype(cfg.dtype if name else training_dtype(cfg.dtype), device)
        model, info = with_hub_errors(path, lambda **hub: AutoModelForQuestionAnswering.from_pretrained(
            path, output_loading_info=True, dtype=dtype, trust_remote_code=cfg.trust_remote_code, **hub))
        model.to(device)
        tokenizer = load_tokenizer(path, cfg.trust_remote_code)
        return LoadedModel(model, tokenizer, path, "base", sorted(info.get("missing_keys", [])))

    def fit(self, splits, run_dir: Path):
        from transformers import set_seed

        from tunelab.train import train_model

        exp = self.experiment
        set_seed(exp.train.seed)  # the new head's initialisation depends on it
        loaded = self.load_base()
        model = self.change.apply(loaded, self.resolved[1], self.target())
        costs = parameter_costs(model)
        if costs["trainable_params"] == 0:
            raise ConfigError(f"strategy 'span' with train: {self.settings.train} leaves no parameter to train")
        predictor = SpanPredictor(self, model, loaded)
        train_features, _ = self.encode(loaded.tokenizer, splits.train)
        dev_features, _ = self.encode(loaded.tokenizer, splits.dev)
        # The Trainer's own dev pass sees windows in a length-grouped order without their examples, so the
        # score decodes the dev questions again, whole, with the model as it is at that evaluation.
        score_dev = lambda logits, labels: predictor.score(splits.dev)  # noqa: E731
        stats = train_model(model, loaded.tokenizer, train_features, dev_features, exp.train, run_dir,
                            score_dev=score_dev, metric_for_best=exp.train.metric_for_best or exp.metrics[0])
        costs.update(train_costs(stats, model))
        return predictor, costs

    def load(self, run_dir: Path):
        loaded, model = self.change.load(Path(run_dir), self.load_base, self.resolved[1], self.target())
        return SpanPredictor(self, model, loaded)


class SpanPredictor:
    """Answers questions: every window through the model (batches of similar length), the best span per question."""

    def __init__(self, strategy: SpanStrategy, model: torch.nn.Module, loaded: LoadedModel):
        self.strategy, self.model, self.loaded = strategy, model, loaded

    def window_logits(self, features: list[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
        from transformers import DataCollatorWithPadding

        collate = DataCollatorWithPadding(self.loaded.tokenizer)
        device = model_device(self.model)
        inputs = [{k: v for k, v in f.items() if k not in ("start_positions", "end_positions")} for f in features]

        def run(chunk: list[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
            out = self.model(**{k: v.to(device) for k, v in collate(chunk).items()})
            starts, ends = out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()  # (B, T)
            return [(starts[n, : len(f["input_ids"])], ends[n, : len(f["input_ids"])]) for n, f in enumerate(chunk)]

        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                return by_length(inputs, lambda f: len(f["input_ids"]), self.strategy.experiment.train.eval_batch_size, run)
        finally:
            self.model.train(was_training)

    def predict(self, examples: list[dict]) -> list[dict]:
        settings = self.strategy.settings
        features, windows = self.strategy.encode(self.loaded.tokenizer, [dict(e, answer_start=None) for e in examples])
        logits = self.window_logits(features)
        per_example: list[list[int]] = [[] for _ in examples]
        for n, window in enumerate(windows):
            per_example[window.example].append(n)
        return [best_answer([logits[n] for n in ns], [windows[n] for n in ns], example["text_pair"],
                            settings.max_answer_length, settings.n_best)
                for example, ns in zip(examples, per_example)]

    def score(self, examples: list[dict]) -> dict:
        predictions = [row["prediction"] for row in self.predict(examples)]
        return compute_metrics(self.strategy.experiment.metrics, predictions, [e["answer_texts"] for e in examples])

    def save(self, directory: Path) -> None:
        self.strategy.change.save(self.model, Path(directory), self.loaded, self.strategy.resolved[1])
