"""In-context learning: `zero_shot` and `few_shot` (k demonstrations; k=1 is one-shot).

No weight changes: a template and verbalizer (`prompt:`) turn each example into a prompt and the
causal LM's log-likelihood of each candidate decides the label (`tunelab.prompts.plan`).
Demonstrations come from the training split (the K-shot one under `data.k_shot`), never from
test; `random` and `balanced` draw the same k for every example (their prefix is scored once),
`nearest` picks each example's k most similar training examples by minilm-l6 sentence embedding.
Optional: contextual calibration, LM-BFF label-word search on train (pruned on dev), templates
written by an LM from train (`tunelab.prompts.autotemplate`), template choice on dev.

    strategy:
      name: few_shot
      k: 4
      selection: balanced          # random | balanced | nearest
      calibrate: true              # divide by p(label | "N/A")
      templates: ["Review: {{ text }}\\nSentiment:", "{{ text }} It was"]   # chosen by dev score
      search_label_words: {candidates: [great, terrible, good, bad], top_n: 1}   # or the LM's own vocabulary,
                                                                                 # dev_top_n: 4 verbalizers tried on dev
      generate_templates: {top_n: 3}   # the LM writes templates from train; they join the choice on dev
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from tunelab.costs import parameter_costs, peak_memory_mb
from tunelab.errors import ConfigError
from tunelab.methods.registry import register
from tunelab.metrics import compute_metrics
from tunelab.prompts import compile_template, score_cache, select_demonstrations
from tunelab.prompts.engine import PromptEngine, PromptPredictor, content_free_probs, preview
from tunelab.prompts.plan import (
    check_causal_lm,
    check_fields,
    check_task,
    context_budget,
    load_lm,
    load_plan,
    load_tokenizer_for,
    new_plan,
    read_prompt,
    verbalizer_words,
    where,
)
from tunelab.prompts.autotemplate import TemplateGeneration
from tunelab.prompts.search import (
    LabelWordSearch,
    choose_by_dev,
    choose_words_on_dev,
    search_plan_words,
    write_search_record,
)
from tunelab.settings import StrictSettings


class ZeroShotSettings(StrictSettings):
    calibrate: bool = False
    """Contextual calibration (Zhao et al., 2021): divide label probabilities by those for a content-free input."""
    content_free_inputs: list[str] = Field(default_factory=lambda: ["N/A"], min_length=1)
    """Inputs whose label distribution (averaged) is divided out when `calibrate` is on."""
    aggregation: Literal["max", "mean", "logsumexp"] = "max"
    """How a label with several words scores: its best word, the mean, or the log of their total probability."""
    length_norm: Literal["none", "token", "char"] = "none"
    """Candidate score: summed log-prob, or divided by its tokens / characters (helps multi-token choices)."""
    templates: list[str] | None = Field(None, min_length=1)
    """Several templates to choose from by dev score (instead of prompt.template); the choice is recorded."""
    search_label_words: LabelWordSearch | None = None
    """Choose label words automatically on the training split (LM-BFF); replaces prompt.verbalizer's words."""
    generate_templates: TemplateGeneration | None = None
    """Let a causal LM write templates from the training examples (LM-BFF); they join the template choice on dev."""
    batch_size: int | None = Field(None, gt=0)
    """Prompts per forward pass; default train.eval_batch_size."""

    @field_validator("templates")
    @classmethod
    def _templates_compile(cls, templates: list[str] | None) -> list[str] | None:
        for n, source in enumerate(templates or []):
            try:
                compile_template(source, f"strategy.templates[{n}]")
            except ConfigError as err:
                raise ValueError(str(err)) from None
        return templates


class FewShotSettings(ZeroShotSettings):
    k: int = Field(4, gt=0)
    """Demonstrations per prompt (k=1: one-shot). Those that do not fit model.max_length are dropped, with a warning."""
    selection: Literal["random", "balanced", "nearest"] = "balanced"
    """random | balanced (classes in turn) | nearest (most similar by minilm-l6 embedding, per example)."""


class InContextStrategy:
    """Shared flow of zero_shot and few_shot: check, choose demonstrations, search, calibrate, score."""

    Settings: type[BaseModel] = ZeroShotSettings
    trains = False  # prompting reads the model as it is (train.adversarial refuses it)

    def __init__(self, settings, experiment, label_names: list[str] | None):
        self.settings, self.experiment, self.label_names = settings, experiment, list(label_names or [])
        self._engine: PromptEngine | None = None
        self.generation_record: dict | None = None  # what `generate_templates` wrote and rejected (fit only)

    @functools.cached_property
    def prompt(self):
        """The `prompt:` section, validated (also when a finished run is loaded without `check`)."""
        return read_prompt(self.experiment)

    @property
    def k(self) -> int:
        return getattr(self.settings, "k", 0)

    @classmethod
    def uses_seed(cls, settings) -> bool:
        """Whether the seed changes the result: only through the seed's K-shot draw, which demonstrations,
        label-word search (train) and template choice (dev) read. Otherwise a sweep runs one seed."""
        multiple_templates = len(getattr(settings, "templates", None) or []) > 1
        return bool(getattr(settings, "k", 0) or settings.search_label_words or multiple_templates
                    or settings.generate_templates)

    @property
    def selection(self) -> str:
        return getattr(self.settings, "selection", "random")

    # --- checks (no model) ------------------------------------------------------------------

    def check(self) -> None:
        exp, s, name = self.experiment, self.settings, self.strategy_name
        check_task(exp, name)
        check_causal_lm(exp, name)
        verbalizer_words(exp, self.prompt, self.label_names)
        multiple_choice = exp.task.type == "multiple_choice"
        if s.calibrate and multiple_choice:
            raise ConfigError(f"{where(exp, 'strategy', 'calibrate')}calibration needs a fixed label set; "
                              "multiple-choice candidates differ per example")
        if s.calibrate and self.selection == "nearest":
            raise ConfigError(f"{where(exp, 'strategy', 'calibrate')}calibration needs the same demonstrations for "
                              "every example; use selection random or balanced, or turn calibrate off")
        if s.search_label_words and multiple_choice:
            raise ConfigError(f"{where(exp, 'strategy', 'search_label_words')}multiple-choice tasks have no label words")
        if s.generate_templates and multiple_choice:
            raise ConfigError(f"{where(exp, 'strategy', 'generate_templates')}template generation scores label words; "
                              "multiple-choice tasks have none")
        if s.templates and self.prompt.template is not None:
            raise ConfigError(f"{where(exp, 'strategy', 'templates')}set either prompt.template or strategy.templates")

    def templates(self) -> list[str | None]:
        return list(self.settings.templates or [self.prompt.template])

    def check_data(self, splits) -> None:
        """Fields, splits and prompt lengths against the data — still before any model is loaded."""
        exp, s = self.experiment, self.settings
        needs_train = bool(self.k or s.search_label_words or s.generate_templates)
        if needs_train and not splits.train:
            what = "its demonstrations" if self.k else "label words" if s.search_label_words else "generated templates"
            raise ConfigError(f"{exp.source}: strategy '{self.strategy_name}' draws {what} from data.train, which is "
                              "not set (data.k_shot then gives the LM-BFF few-shot protocol)")
        if (len(self.templates()) > 1 or s.generate_templates) and not splits.dev:
            key = "templates" if len(self.templates()) > 1 else "generate_templates"
            raise ConfigError(f"{where(exp, 'strategy', key)}choosing a template needs a dev split: set data.dev "
                              "or data.k_shot (never the test split)")
        if s.search_label_words and s.search_label_words.dev_top_n > 1 and not splits.dev:
            raise ConfigError(f"{where(exp, 'strategy', 'search_label_words')}dev_top_n chooses label words on the dev "
                              "split: set data.dev or data.k_shot (never the test split)")
        rendered = {"test": splits.test, "dev": splits.dev, "train": splits.train if needs_train else []}
        check_fields(exp, self.prompt, self.templates(), [e for examples in rendered.values() for e in examples])
        if not s.search_label_words:
            rendered["train"] = []  # demonstrations are dropped when they do not fit; they need no length check
        plan = self.base_plan(splits, demonstrations=False)
        for template in self.templates():
            for split, examples in rendered.items():
                self.engine().check_lengths(plan.with_template(template), examples, split)

    # --- pieces -------------------------------------------------------------------------------

    def engine(self) -> PromptEngine:
        if self._engine is None:
            exp = self.experiment
            self._engine = PromptEngine(load_tokenizer_for(exp), max_length=context_budget(exp),
                                        batch_size=self.settings.batch_size or exp.train.eval_batch_size)
        return self._engine

    def base_plan(self, splits, demonstrations: bool = True):
        s, seed = self.settings, self.experiment.train.seed
        plan = new_plan(self.experiment, self.prompt, self.label_names, k=self.k, aggregation=s.aggregation,
                        length_norm=s.length_norm, content_free_inputs=list(s.content_free_inputs))
        if not (demonstrations and self.k):
            return plan
        if self.selection == "nearest":
            return plan.replace(selection="nearest", pool=list(splits.train))
        return plan.replace(demonstrations=select_demonstrations(splits.train, self.k, self.selection, seed=seed))

    def evaluate(self, plan, examples: list[dict]) -> dict:
        exp = self.experiment
        predictions = [o["prediction"] for o in self.engine().predict(plan, examples)]
        return compute_metrics(exp.metrics, predictions, [e["label"] for e in examples], labels=self.label_names or None)

    def trial(self, plan, splits) -> tuple:
        """One template: search its label words, calibrate, score dev. Returns (plan, record)."""
        s, engine = self.settings, self.engine()
        record: dict = {"template": plan.settings.template}
        if s.search_label_words:
            _, found = search_plan_words(engine, plan, splits.train, s.search_label_words)
            metric = self.experiment.train.metric_for_best or self.experiment.metrics[0]
            plan, record["label_words"] = choose_words_on_dev(plan, found, splits.dev, self.evaluate_calibrated, metric)
        if s.calibrate:
            plan = plan.replace(calibration=content_free_probs(engine, plan))
        if splits.dev:
            record["dev"] = self.evaluate(plan, splits.dev)
        return plan, record

    def evaluate_calibrated(self, plan, examples: list[dict]) -> dict:
        """Dev score of a candidate as the strategy will use it (calibrated when `calibrate` is on)."""
        if self.settings.calibrate:
            plan = plan.replace(calibration=content_free_probs(self.engine(), plan))
        return self.evaluate(plan, examples)

    def run_trials(self, splits) -> list[tuple]:
        """Load the LM into the engine, then `trial` every template: [(plan, record)] (data already checked)."""
        engine = self.engine()
        engine.model = load_lm(self.experiment).model
        engine.cache = score_cache.for_pretrained(engine.model, engine.tokenizer)  # within a sweep only
        base = self.base_plan(splits)
        templates = self.templates() + self.generated_templates(base, splits)
        return [self.trial(base.with_template(t), splits) for t in templates]

    def generated_templates(self, plan, splits) -> list[str]:
        """Templates a causal LM wrote from the training split (`generate_templates`); [] when not asked."""
        from tunelab.prompts.autoprompt import generated_for

        generation = self.settings.generate_templates
        if generation is None:
            return []
        found = generated_for(self.experiment, self.engine(), plan, splits, generation)
        self.generation_record = found
        return found["kept"]

    # --- Strategy protocol ---------------------------------------------------------------------

    def fit(self, splits, run_dir: Path):
        self.check_data(splits)
        clock = score_cache.Stopwatch()
        trials = self.run_trials(splits)
        engine = self.engine()
        metric = self.experiment.train.metric_for_best or self.experiment.metrics[0]
        best = choose_by_dev([r for _, r in trials], metric) if len(trials) > 1 else 0
        plan, record = trials[best]
        if len(trials) > 1 or self.settings.search_label_words or self.generation_record:
            search = {"metric": metric, "chosen": best, "trials": [r for _, r in trials]}
            if self.generation_record:
                search["generated_templates"] = self.generation_record
            plan = plan.replace(search=search)
            write_search_record(run_dir, search)
        costs = {**parameter_costs(engine.model), "train_seconds": 0.0, "search_seconds": clock.seconds(),
                 "best_dev": record.get("dev", {}), "demonstrations": len(plan.demonstrations) or plan.k,
                 "peak_memory_mb": peak_memory_mb(next(engine.model.parameters()).device)}
        return PromptPredictor(engine, plan), costs

    def load(self, run_dir: Path):
        engine = self.engine()
        engine.model = load_lm(self.experiment).model
        return PromptPredictor(engine, load_plan(run_dir))

    def preview(self, splits, n: int) -> list[str]:
        """The first n test prompts exactly as the model reads them (`tunelab prompt`); no model is loaded."""
        self.check_data(splits)
        notes = []
        if self.settings.search_label_words or len(self.templates()) > 1 or self.settings.generate_templates:
            notes.append("note: label words and/or the template are chosen at run time (search); shown: the first "
                         "template with prompt.verbalizer's words")
        if self.selection == "nearest" and self.k:
            notes.append("note: nearest demonstrations are chosen with minilm-l6 embeddings (loaded for this preview)")
        plan = self.base_plan(splits).with_template(self.templates()[0])
        return notes + preview(self.engine(), plan, splits.test[:n])


@register("zero_shot", "Prompt the LM with a template; the verbalizer's likeliest word is the label", family="prompting")
class ZeroShot(InContextStrategy):
    Settings = ZeroShotSettings


@register("few_shot", "In-context learning: k training demonstrations before each prompt (k=1: one-shot)", family="prompting")
class FewShot(InContextStrategy):
    Settings = FewShotSettings
