"""`pet_choices`: prompt-based fine-tuning that scores whole answers — a causal LM learns to rank each example's
choices, or a classification task's label words with every one of their tokens.

The choices are read out the way `zero_shot` reads them (read-out `choices`): the prompt (`prompt:`), then each
choice, scored by its log-likelihood (summed, or per token / per character: `length_norm`). Training minimises
the cross-entropy of the softmax over an example's own choices against the gold one (rank classification, as
T-Few's length-normalised loss). Before any step the predictions are zero_shot's with the same `length_norm`
(a test checks it), so the dev split sees what training adds::

    strategy: {name: pet_choices, train: lora, delta: {r: 8}}
    strategy: {name: pet_choices, train: full, length_norm: char}

How the model changes is `train:` — any model change that pairs with an LM read-out, as under `pet`
(`full`, `lm_head`, `bitfit`, `lora`, `ia3`, `prompt_tuning`, ...; `tunelab.methods.lm_delta`). The K-shot dev
split picks the epoch (its held-out score is what `compare` ranks by). Examples may have different numbers of
choices; the gold answer must be one of them (the data check says so).

On a classification (or sentence-pair) task the choices are the label words of `prompt.verbalizer`, one per
label, the same for every example: where `pet` scores only a word's first token after the prompt (so "very
negative" and "very positive" cannot be told apart, nor trained apart), `pet_choices` scores the whole word as
`zero_shot` does, in training and prediction alike.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from tunelab.batching import by_length
from tunelab.costs import parameter_costs
from tunelab.data.validate import CLASSIFICATION
from tunelab.errors import ConfigError
from tunelab.methods.choice_model import ChoiceCollator, ChoiceModel, SharedPromptChoiceModel, encode_choices
from tunelab.methods.classifier import train_costs
from tunelab.methods.lm_delta import LmChange
from tunelab.methods.registry import register
from tunelab.metrics import compute_metrics
from tunelab.model_changes import resolve_change
from tunelab.outputs import label_outputs
from tunelab.prompts.engine import PromptEngine, preview
from tunelab.prompts.plan import (
    check_causal_lm,
    check_fields,
    check_task,
    context_budget,
    load_plan,
    load_tokenizer_for,
    new_plan,
    read_prompt,
    save_plan,
    where,
)
from tunelab.settings import StrictSettings

PREFLIGHT_EXAMPLES = 8
"""Examples per split `check_splits` encodes (the template is the same for all; a few catch missing fields)."""


class PetChoicesSettings(StrictSettings):
    train: str = "full"
    """The model change: `full`, `lm_head`, `bitfit`, `partial`, `adapter`, or a PEFT strategy (`lora`, `ia3`, ...)."""
    delta: dict = Field(default_factory=dict)
    """Settings of the model change named by `train` (e.g. `{r: 8}` for lora); checked by its own schema."""
    length_norm: Literal["none", "token", "char"] = "none"
    """A choice's score: its summed log-likelihood, or divided by its tokens / characters (as zero_shot's)."""
    batch_size: int | None = Field(None, gt=0)
    """Examples per prediction batch (each brings all its choices); default train.eval_batch_size."""


@register("pet_choices", "Prompt-based fine-tuning that scores whole answers: cross-entropy over each example's "
          "choices (multiple choice) or the label words (classification), every token scored by the LM", family="prompting")
class PetChoicesStrategy:
    Settings = PetChoicesSettings

    def __init__(self, settings: PetChoicesSettings, experiment, label_names: list[str] | None):
        self.settings, self.experiment, self.label_names = settings, experiment, list(label_names or [])

    @property
    def classifies(self) -> bool:
        """A classification task: the choices are the label words, the answer is the label's word."""
        return self.experiment.task.type in CLASSIFICATION

    @functools.cached_property
    def prompt(self):
        return read_prompt(self.experiment)

    @classmethod
    def check_pairing(cls, settings: PetChoicesSettings, experiment) -> None:
        resolve_change(experiment, cls.strategy_name, settings.train, settings.delta, "choices")

    @functools.cached_property
    def change(self) -> LmChange:
        return LmChange.resolve(self.experiment, self.strategy_name, self.settings.train, self.settings.delta, "causal_lm")

    # --- checks before any model -------------------------------------------------------------

    def check(self) -> None:
        exp = self.experiment
        check_task(exp, self.strategy_name, ("multiple_choice", *CLASSIFICATION))
        check_causal_lm(exp, self.strategy_name)
        self.check_words(self.plan())  # multiple choice refuses a prompt.verbalizer: the candidates are the choices
        self.change.check()
        self.check_training_keys()

    def check_training_keys(self) -> None:
        """The train: techniques built for one row per example; a question here is a row per choice, and R-Drop's
        stacked copies or rewritten copies of the question are not made for that yet. Refused, naming the key,
        rather than trained wrongly. Label smoothing applies: it spreads over each question's own choices
        (`training.regularization.smoothed_cross_entropy`)."""
        train = self.experiment.train
        for key, value in (("rdrop_alpha", train.rdrop_alpha), ("adversarial", train.adversarial),
                           ("augment", train.augment)):
            if value:
                raise ConfigError(f"{self.experiment.locate('train', key)}: train.{key} does not apply to pet_choices "
                                  "yet (one row per choice of a question); remove it for this strategy")

    def plan(self):
        return new_plan(self.experiment, self.prompt, self.label_names, length_norm=self.settings.length_norm)

    def check_words(self, plan) -> None:
        """One word per label: training ranks one answer per label (the engine could aggregate several at
        prediction, but the loss would then rank words, not labels)."""
        for label, words in (plan.verbalizer or {}).items():
            if len(words) != 1:
                shown = ", ".join(map(repr, words))
                raise ConfigError(f"{where(self.experiment, 'prompt', 'verbalizer')}pet_choices scores one word per "
                                  f"label, every token of it; label {label!r} has {len(words)} ({shown}): keep one, "
                                  "or use pet, which reads several words of a label by their first tokens")

    def as_questions(self, plan, examples: list[dict]) -> list[dict]:
        """Classification examples as questions whose choices are the label words (in label order) and whose answer
        is their label's word; multiple-choice examples as they are."""
        if plan.verbalizer is None:
            return examples
        words = [plan.verbalizer[label][0] for label in plan.labels]
        word_of = dict(zip(plan.labels, words))
        return [dict(e, choices=words, label=word_of.get(e.get("label"))) for e in examples]

    def check_splits(self, splits) -> None:
        """Every example's template fields and token count, and the first examples encoded (no weights): a template
        field the data lacks or a prompt too long for the context stops a run — and a sweep, before its first
        cell — at once; `fit` then needs no check of its own."""
        if not splits.train:
            raise ConfigError(f"{self.experiment.source}: pet_choices trains on data.train, which is not set (or empty); "
                              "for multiple choice without training use zero_shot or few_shot")
        plan = self.plan()
        for name in ("train", "dev", "test"):
            examples = getattr(splits, name)
            check_fields(self.experiment, self.prompt, [self.prompt.template], examples)  # every example's fields
            self.encode(plan, examples[:PREFLIGHT_EXAMPLES], name)  # the prompt/choice split of a few
            self.engine.check_lengths(plan, examples, name)  # a prompt + choice longer than the context: exit 2

    @functools.cached_property
    def engine(self) -> PromptEngine:
        return PromptEngine(load_tokenizer_for(self.experiment), max_length=context_budget(self.experiment))

    def encode(self, plan, examples: list[dict], split: str) -> list[dict]:
        check_fields(self.experiment, self.prompt, [self.prompt.template], examples)
        texts = [self.engine.render(plan, example, []) for example in examples]
        return encode_choices(self.engine.tokenizer, texts, self.as_questions(plan, examples), plan.length_norm,
                              context_budget(self.experiment), split)

    # --- the model -----------------------------------------------------------------------------

    def load_base(self, name: str | None = None):
        from tunelab.models import load_model

        cfg = self.experiment.model
        return load_model(name or cfg.name, "causal_lm", device=cfg.device, dtype=cfg.dtype,
                          trust_remote_code=cfg.trust_remote_code)

    def fit(self, splits, run_dir: Path):
        from transformers import set_seed

        from tunelab.train import train_model

        exp, plan = self.experiment, self.plan()
        train, dev = self.encode(plan, splits.train, "train"), self.encode(plan, splits.dev, "dev")
        width = max(len(f["choice_ids"]) for f in train + dev)
        set_seed(exp.train.seed)
        loaded = self.load_base()
        model = self.wrap(self.change.apply(loaded))
        costs = parameter_costs(model)
        stats = train_model(model, self.engine.tokenizer, train, dev, exp.train, run_dir, score_dev=self.score_dev,
                            metric_for_best=exp.train.metric_for_best or exp.metrics[0],
                            collator=self.collator(width), dev_readout=self.dev_readout(width))
        costs.update(train_costs(stats, model))
        return ChoicePredictor(self, model, loaded, plan), costs

    def wrap(self, lm) -> torch.nn.Module:
        """The prompt once per question, its cache shared by the choices; a row per choice for soft prompts."""
        return ChoiceModel(lm) if self.change.soft_prompt else SharedPromptChoiceModel(lm)

    @property
    def prediction_batch_size(self) -> int:
        return self.settings.batch_size or self.experiment.train.eval_batch_size

    def collator(self, width: int = 0) -> ChoiceCollator:
        return ChoiceCollator(self.engine.tokenizer.pad_token_id or 0, width, shared_prompt=not self.change.soft_prompt)

    # --- dev scores ----------------------------------------------------------------------------

    def score_dev(self, logits, label_ids) -> dict:
        return self.score_probabilities(*self.dev_probabilities(logits, label_ids))

    @staticmethod
    def dev_probabilities(logits, label_ids) -> tuple:
        """((D, C) distributions over each dev example's choice slots, (D,) gold slots)."""
        return torch.as_tensor(logits).float().softmax(-1).numpy(), np.asarray(label_ids)

    def score_probabilities(self, probs, gold) -> dict:
        """The metrics of the most probable choice slots against the gold slots. Slots, not texts: the held-out
        dev score scores subsets of the dev split. Accuracy is the same either way (what multiple choice is
        scored by); a per-label metric such as f1 counts slots as labels here, choice texts on test. On a
        classification task a slot is a label, so every metric reads labels, as on test."""
        names = self.slot_names(probs.shape[-1])
        predicted, answers = [names[i] for i in probs.argmax(-1)], [names[i] for i in gold]
        return compute_metrics(self.experiment.metrics, predicted, answers,
                               **({"labels": self.label_names} if self.classifies else {}))

    def slot_names(self, width: int) -> list[str]:
        return list(self.label_names) if self.classifies else [slot_name(i) for i in range(width)]

    def dev_readout(self, width: int):
        from tunelab.held_out_dev import DevReadout

        return DevReadout(self.dev_probabilities, self.score_probabilities, self.slot_names(width))

    # --- artifacts -----------------------------------------------------------------------------

    def load(self, run_dir: Path):
        loaded, lm = self.change.load(run_dir, self.load_base)
        return ChoicePredictor(self, self.wrap(lm), loaded, load_plan(run_dir))

    def preview(self, splits, n: int) -> list[str]:
        """The first n test prompts as the model reads them, each with its choices."""
        plan = self.plan()
        self.encode(plan, splits.test[:n], "test")
        return preview(self.engine, plan, splits.test[:n])


def slot_name(index) -> str:
    """A dev example's choice slot as a label: 'choice 1', 'choice 2', ..."""
    return f"choice {int(index) + 1}"


class ChoicePredictor:
    def __init__(self, strategy: PetChoicesStrategy, model: torch.nn.Module, loaded, plan):
        self.strategy, self.model, self.loaded, self.plan = strategy, model, loaded, plan

    def choice_scores(self, examples: list[dict]) -> list[list[float]]:
        """Each example's normalised log-likelihood of each of its choices, as training computes it (no label is read)."""
        s = self.strategy
        features = s.encode(self.plan, [dict(e, label=None) for e in examples], "prediction")
        collate = s.collator()
        device = next(self.model.parameters()).device

        def run(chunk: list[dict]) -> list[list[float]]:
            batch = {k: v.to(device) for k, v in collate(chunk).items()}
            scores = self.model(**batch)["logits"].float().cpu()  # (B, C)
            return [row[: len(f["choice_ids"])].tolist() for row, f in zip(scores, chunk)]

        self.model.eval()
        with torch.inference_mode():
            return by_length(features, lambda f: len(f["input_ids"]), s.prediction_batch_size, run)

    def predict(self, examples: list[dict]) -> list[dict]:
        """The best choice of each example. Scored by zero_shot's engine, which runs a prompt once for all its
        choices (C times fewer tokens than `choice_scores`, which training needs); soft prompts shift positions
        the engine does not know of, so they take `choice_scores`. Both give the same scores (a test checks it)."""
        if not examples:
            return []
        s = self.strategy
        if not s.change.soft_prompt:
            engine = PromptEngine(s.engine.tokenizer, self.model.lm, max_length=context_budget(s.experiment),
                                  batch_size=s.prediction_batch_size)
            return engine.predict(self.plan, [dict(e, label=None) for e in examples])
        scores = self.choice_scores(examples)
        if s.classifies:  # every example's choices are the label words, in label order
            return label_outputs(scores, self.plan.labels)
        return [{"prediction": example["choices"][int(np.argmax(row))], "scores": dict(zip(example["choices"], row))}
                for example, row in zip(examples, scores)]

    def save(self, directory: Path) -> None:
        save_plan(self.plan, directory)
        self.strategy.change.save(self.model.lm, directory, self.loaded)
