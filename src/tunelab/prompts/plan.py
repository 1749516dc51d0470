"""Shared machinery of the LM-scored prompt strategies (`zero_shot`, `few_shot`; reused by `pet`, `cot`).

How a label is read out (DESIGN.md keeps this apart from how the model is changed)::

    demonstrations ─┐
    example ─template┴─► parts + demonstrations + query ──chat template?──► (prefix, query)
    candidates c: the verbalizer's words (classification) or the example's `choices` (multiple choice)
    score(c) = Σ_t log p(c_t | prefix, query, c_<t)        [÷ tokens or ÷ characters: `length_norm`]
    label score = max | mean | logsumexp over the label's words (`aggregation`)
    calibrated  = log( (p / p_cf) / Σ_l (p / p_cf) ),  p = softmax over labels,
                  p_cf = the same for content-free inputs such as "N/A" (Zhao et al., 2021)

A word without leading whitespace gets one space before it (lm-eval's ``target_delimiter``),
unless the query already ends with whitespace (e.g. a chat template's "assistant\\n").

The pieces, in the order a strategy uses them (all checks run before any model is loaded); this
module holds the checks and the plan, `tunelab.prompts.engine` the rendering and scoring::

    prompt = read_prompt(experiment)                       # `prompt:` validated, file/line errors
    check_causal_lm(experiment, name)                      # an encoder without LM head -> ConfigError
    plan = new_plan(experiment, prompt, label_names)       # verbalizer checked against the task's labels
    check_fields(experiment, prompt, [templates], examples)  # template fields vs the data's fields
    engine = PromptEngine(load_tokenizer_for(experiment), max_length=context_budget(experiment))
    engine.check_lengths(plan, examples, "test")           # a prompt longer than the context -> ConfigError
    engine.model = load_lm(experiment).model               # only now the model
    PromptPredictor(engine, plan).predict(examples)        # {"prediction": label, "scores": {label: score}}

`PromptPlan` is everything that decides what the model sees (prompt settings, verbalizer, chosen
demonstrations, calibration vector, search record); it is saved as ``prompt.json`` in the run
directory so `tunelab evaluate` / `predict` rebuild the same predictor (`load_plan`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunelab.config import validate_settings
from tunelab.data.validate import CLASSIFICATION
from tunelab.errors import ConfigError
from tunelab.model_facts import head_facts, resolved_facts
from tunelab.prompts import PromptSettings, Verbalizer

ARTIFACT_FILE = "prompt.json"
PROMPT_TASKS = (*CLASSIFICATION, "multiple_choice")


# --------------------------------------------------------------------------- config checks


def where(experiment, *key) -> str:
    """'file, line N: ' for a key path of the experiment file (line omitted when unknown)."""
    from tunelab.config import location

    return f"{experiment.source}{location(experiment.lines.get(tuple(key)))}: "


def read_prompt(experiment) -> PromptSettings:
    """The `prompt:` section, validated (unknown keys and template syntax errors name file and line)."""
    return validate_settings(PromptSettings, experiment.prompt or {}, ("prompt",), experiment.source, experiment.lines)


def check_task(experiment, strategy: str, allowed: tuple[str, ...] = PROMPT_TASKS) -> None:
    if experiment.task.type not in allowed:
        raise ConfigError(f"{where(experiment, 'task', 'type')}strategy '{strategy}' scores answer candidates and "
                          f"supports task.type {', '.join(allowed)}, not {experiment.task.type}")


def check_causal_lm(experiment, strategy: str) -> None:
    """Refuse models that cannot score continuations, reading only their facts (no weights)."""
    name = experiment.model.name
    facts = head_facts(name)
    if facts is None:
        return  # a hub id: load_model reports whether it can be fetched
    ok, what = facts.causal_lm, facts.what
    if not ok:
        raise ConfigError(
            f"{where(experiment, 'model', 'name')}strategy '{strategy}' scores answer words with a causal (decoder) "
            f"language model, but model '{name}' is {what}. Masked-LM scoring is not supported, and an encoder "
            f"without an LM head cannot score words; use a causal LM such as smollm2-135m (see `tunelab models`)."
        )


def check_fields(experiment, prompt: PromptSettings, templates: list[str | None], examples: list[dict]) -> None:
    """Every field a template uses must be present in every example that will be rendered."""
    if not examples:
        return
    fields = set.intersection(*(set(ex) for ex in examples))
    for template in templates:
        try:
            prompt.model_copy(update={"template": template}).check_fields(fields, examples[0])  # renders it once too
        except ConfigError as err:
            key = ("strategy", "templates") if template is not None and template != prompt.template else ("prompt", "template")
            raise ConfigError(f"{where(experiment, *key)}{err}") from None


def verbalizer_words(experiment, prompt: PromptSettings, label_names: list[str]) -> dict[str, list[str]] | None:
    """Label -> words, checked against the task's labels; None for multiple choice (candidates are `choices`).

    Without a `prompt.verbalizer`, each label's name is its word (" positive" after a space).
    """
    if experiment.task.type == "multiple_choice":
        if prompt.verbalizer:
            raise ConfigError(f"{where(experiment, 'prompt', 'verbalizer')}multiple-choice tasks score each example's "
                              f"`{experiment.task.choices_field}`; remove prompt.verbalizer")
        return None
    words = prompt.verbalizer or {label: label for label in label_names}
    try:
        verbalizer = Verbalizer(words, labels=label_names)
    except ConfigError as err:
        raise ConfigError(f"{where(experiment, 'prompt', 'verbalizer')}{err}") from None
    return {str(label): list(ws) for label, ws in verbalizer.words.items()}


def context_budget(experiment) -> int:
    """Tokens a prompt plus its longest candidate may take: model.max_length, capped by the model's positions."""
    limit = experiment.model.max_length
    facts = resolved_facts(experiment.model.name)
    if facts is not None:
        limit = min(limit, facts.max_positions or limit)
    return limit


def load_tokenizer_for(experiment):
    from tunelab.models import load_tokenizer, resolve_model_path

    return load_tokenizer(resolve_model_path(experiment.model.name), experiment.model.trust_remote_code)


def load_lm(experiment):
    """The experiment's model with its LM head, frozen (prompting changes no weight)."""
    from tunelab.models import load_model

    cfg = experiment.model
    loaded = load_model(cfg.name, "causal_lm", device=cfg.device, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    loaded.model.requires_grad_(False).eval()
    return loaded


# --------------------------------------------------------------------------- the plan


@dataclass
class PromptPlan:
    """What the model sees and how a label is read out; JSON-serialisable (`prompt.json`)."""

    task_type: str
    prompt: dict
    """`PromptSettings` as a dict (the template actually used, after any template search)."""
    labels: list[str] = field(default_factory=list)
    verbalizer: dict[str, list[str]] | None = None
    demonstrations: list[dict] = field(default_factory=list)
    """The same demonstrations for every example, in prompt order (random/balanced selection)."""
    selection: str = "fixed"
    """`fixed` (use `demonstrations`) or `nearest` (the `k` most similar examples of `pool`, per example)."""
    pool: list[dict] = field(default_factory=list)
    k: int = 0
    aggregation: str = "max"
    length_norm: str = "none"
    calibration: list[float] | None = None
    """p_cf per label (content-free label distribution); None: uncalibrated."""
    content_free_inputs: list[str] = field(default_factory=lambda: ["N/A"])
    search: dict = field(default_factory=dict)
    """What automatic search tried and chose (label words, templates with their dev scores)."""

    @property
    def settings(self) -> PromptSettings:
        return PromptSettings.model_validate(self.prompt)

    def with_template(self, template: str | None) -> PromptPlan:
        return self.replace(prompt={**self.prompt, "template": template})

    def replace(self, **changes) -> PromptPlan:
        return PromptPlan(**{**asdict(self), **changes})

    def answer_of(self, example: dict) -> str:
        """A demonstration's answer: the label's first word (classification) or the correct choice."""
        if self.verbalizer is None:
            return str(example["label"])
        return self.verbalizer[str(example["label"])][0]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> PromptPlan:
        return cls(**data)


def new_plan(experiment, prompt: PromptSettings, label_names: list[str], **options) -> PromptPlan:
    words = verbalizer_words(experiment, prompt, label_names)
    labels = list(label_names) if words is not None else []
    return PromptPlan(experiment.task.type, prompt.model_dump(mode="json"), labels, words, **options)


def save_plan(plan: PromptPlan, directory: Path) -> None:
    (Path(directory) / ARTIFACT_FILE).write_text(json.dumps(plan.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def load_plan(directory: Path) -> PromptPlan:
    from tunelab.artifacts import require_artifact

    path = require_artifact(directory, ARTIFACT_FILE)
    return PromptPlan.from_json(json.loads(path.read_text(encoding="utf-8")))
