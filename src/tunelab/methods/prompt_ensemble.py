"""`prompt_ensemble`: several templates vote — their calibrated label distributions are averaged.

Each template is calibrated on its own (Zhao et al. 2021: a template's bias towards a label is
divided out with its content-free distribution p_cf), then the label distributions are averaged:

    p_t(l | x)  = calibrated softmax of template t's label scores    (N, L) per template
    p(l | x)    = (1 / T) · Σ_t p_t(l | x)
    prediction  = argmax_l p(l | x)

Averaging calibrated distributions rather than raw ones keeps a template that is confidently
biased towards one label from outvoting the others (PET's ensembles of patterns, unweighted).
Zero-shot by default; `k` > 0 puts the same k demonstrations before every template's prompt.

    strategy:
      name: prompt_ensemble
      templates: ["Review: {{ text }}\\nSentiment:", "{{ text }} Overall, it was"]
      calibrate: true
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from tunelab.costs import parameter_costs, peak_memory_mb
from tunelab.errors import ConfigError
from tunelab.methods.icl import InContextStrategy, ZeroShotSettings
from tunelab.methods.registry import register
from tunelab.outputs import label_outputs
from tunelab.prompts import calibrate, score_cache
from tunelab.prompts.engine import PromptEngine, softmax
from tunelab.prompts.plan import load_lm, load_plan, save_plan, where

MEMBERS_DIR = "ensemble"


class EnsembleSettings(ZeroShotSettings):
    templates: list[str] = Field(min_length=2)
    """The templates whose calibrated label distributions are averaged (two or more)."""
    calibrate: bool = True
    """Calibrate each template on content-free inputs before averaging (recommended)."""
    k: int = Field(0, ge=0)
    """Demonstrations before each prompt (0: zero-shot)."""
    selection: Literal["random", "balanced"] = "balanced"
    """How the k demonstrations are drawn from the training split (the same for every example)."""


@register("prompt_ensemble", "Averages the calibrated label distributions of several templates", family="prompting")
class PromptEnsemble(InContextStrategy):
    Settings = EnsembleSettings

    @classmethod
    def uses_seed(cls, settings) -> bool:
        # The templates are averaged, not chosen on dev: only demonstrations read the seed's draw.
        return bool(settings.k)

    def check(self) -> None:
        if self.experiment.task.type == "multiple_choice":
            raise ConfigError(f"{where(self.experiment, 'task', 'type')}prompt_ensemble averages label distributions; "
                              "use few_shot for multiple-choice tasks")
        if self.settings.search_label_words:
            raise ConfigError(f"{where(self.experiment, 'strategy', 'search_label_words')}prompt_ensemble uses "
                              "prompt.verbalizer's words for every template; label-word search is not supported here")
        # The ensemble's templates replace prompt.template (which a sweep's base prompt often sets).
        self.prompt = self.prompt.model_copy(update={"template": None})
        super().check()

    def fit(self, splits, run_dir: Path):
        self.check_data(splits)
        clock = score_cache.Stopwatch()
        trials = self.run_trials(splits)
        engine = self.engine()
        predictor = EnsemblePredictor(engine, [plan for plan, _ in trials])
        dev = self.evaluate_predictor(predictor, splits.dev) if splits.dev else {}
        costs = {**parameter_costs(engine.model), "train_seconds": 0.0, "search_seconds": clock.seconds(),
                 "best_dev": dev, "templates": [record for _, record in trials],
                 "peak_memory_mb": peak_memory_mb(next(engine.model.parameters()).device)}
        return predictor, costs

    def evaluate_predictor(self, predictor, examples: list[dict]) -> dict:
        from tunelab.metrics import compute_metrics

        predictions = [o["prediction"] for o in predictor.predict(examples)]
        return compute_metrics(self.experiment.metrics, predictions, [e["label"] for e in examples],
                               labels=self.label_names or None)

    def load(self, run_dir: Path):
        engine = self.engine()
        engine.model = load_lm(self.experiment).model
        members = sorted((Path(run_dir) / MEMBERS_DIR).iterdir(), key=lambda p: int(p.name))
        return EnsemblePredictor(engine, [load_plan(directory) for directory in members])


class EnsemblePredictor:
    """Scores every template's plan and averages the (calibrated) label distributions."""

    def __init__(self, engine: PromptEngine, plans: list):
        self.engine, self.plans = engine, plans

    def distributions(self, examples: list[dict]) -> np.ndarray:
        """(T, N, L): each template's calibrated label distribution for each example."""
        out = []
        for plan in self.plans:
            probs = softmax(self.engine.label_scores(plan, examples))  # (N, L)
            if plan.calibration is not None:
                probs = calibrate(probs, np.asarray(plan.calibration))
            out.append(probs)
        return np.stack(out)

    def predict(self, examples: list[dict]) -> list[dict]:
        if not examples:
            return []
        return label_outputs(self.distributions(examples).mean(axis=0), self.plans[0].labels)  # (N, L)

    def save(self, directory: Path) -> None:
        for index, plan in enumerate(self.plans):
            member = Path(directory) / MEMBERS_DIR / str(index)
            member.mkdir(parents=True, exist_ok=True)
            save_plan(plan, member)
