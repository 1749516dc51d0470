"""Automatic prompt search shared by the prompt strategies: generated templates and searched label words,
both pruned on the K-shot dev split (LM-BFF, Gao et al., 2021).

    templates  = the user's template + `generate_templates`' kept ones (tunelab.prompts.autotemplate)
    per template: label words ranked on train, candidate verbalizers scored on dev (tunelab.prompts.search)
    chosen     = the (template, words) with the best dev metric; every candidate and score is recorded

Only the training split (ranking, generation) and the dev split (choice) are read; test examples are
rendered only to check that a generated template fits the context, never scored, and their labels
are never read.
"""

from __future__ import annotations

from tunelab.errors import ConfigError
from tunelab.prompts.autotemplate import TemplateGeneration, generate_templates
from tunelab.prompts.engine import PromptEngine
from tunelab.prompts.plan import PromptPlan
from tunelab.prompts.search import LabelWordSearch, choose_by_dev, choose_words_on_dev, search_plan_words


def generator_for(experiment, engine: PromptEngine, generation: TemplateGeneration):
    """(model, tokenizer) that write templates: the named causal LM, else the engine's own (already loaded)."""
    if generation.model is None or generation.model == experiment.model.name:
        return engine.model, engine.tokenizer
    from tunelab.models import load_model

    cfg = experiment.model
    loaded = load_model(generation.model, "causal_lm", device=cfg.device, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    return loaded.model.eval(), loaded.tokenizer


def generated_for(experiment, engine: PromptEngine, plan: PromptPlan, splits, generation: TemplateGeneration) -> dict:
    """`generate_templates`' record; kept templates must also fit the context on every split (else rejected)."""
    model, tokenizer = generator_for(experiment, engine, generation)
    found = generate_templates(model, tokenizer, splits.train, plan.labels, plan.verbalizer, generation)
    fitting = []
    for template in found["kept"]:
        try:
            for split in ("train", "dev", "test"):
                engine.check_lengths(plan.with_template(template), getattr(splits, split), split)
        except ConfigError as err:
            next(c for c in found["candidates"] if c["template"] == template)["rejected"] = str(err)
            continue
        fitting.append(template)
    return {**found, "kept": fitting}


def search_prompt(experiment, engine: PromptEngine, plan: PromptPlan, splits, *, words: LabelWordSearch | None,
                  generation: TemplateGeneration | None, evaluate, metric: str) -> tuple[PromptPlan, dict]:
    """(plan with the dev-chosen template and words, search record). `evaluate(plan, examples)` -> metrics."""
    if not splits.dev:
        raise ConfigError(f"{experiment.source}: prompt search chooses on the dev split: set data.dev or data.k_shot "
                          "(never the test split)")
    record: dict = {"metric": metric}
    templates = [plan.settings.template]
    if generation is not None:
        record["generated_templates"] = generated_for(experiment, engine, plan, splits, generation)
        templates += record["generated_templates"]["kept"]
    trials = []
    for template in templates:
        candidate, trial = plan.with_template(template), {"template": template}
        if words is not None:
            _, found = search_plan_words(engine, candidate, splits.train, words)
            candidate, trial["label_words"] = choose_words_on_dev(candidate, found, splits.dev, evaluate, metric)
        trial["dev"] = evaluate(candidate, splits.dev)
        trials.append((candidate, trial))
    best = choose_by_dev([t for _, t in trials], metric)
    record.update(chosen=best, trials=[t for _, t in trials])
    return trials[best][0], record
