"""`pet`'s prompt search before training (LM-BFF): generated templates and label words, chosen on dev.

The untrained causal LM scores every candidate zero-shot (`tunelab.prompts.autoprompt`): label words
ranked on the K-shot training split, templates written by `generate_templates`' LM from it, each
(template, words) scored on the K-shot dev split; the best by the dev metric is the prompt `pet`
then trains with. LM-BFF fine-tunes each kept candidate and picks after training; on 2 CPU cores
that is too dear, so the choice here is the zero-shot dev score (the paper's pruning stage).
Words of several tokens are ranked as the search says (`word_score`), but `pet` trains and reads
their first token, like any `pet` verbalizer. The record goes into `prompt.json` and
`prompt_search.json` (the report's prompt-search table).
"""

from __future__ import annotations

from pathlib import Path

from tunelab.metrics import compute_metrics
from tunelab.prompts.autoprompt import search_prompt
from tunelab.prompts.engine import PromptEngine
from tunelab.prompts.plan import context_budget
from tunelab.prompts.search import write_search_record


def search_before_training(strategy, loaded, plan, splits, run_dir: Path):
    """The plan `pet` trains with: the dev-chosen template and words; the search is recorded in it and beside it."""
    exp, s = strategy.experiment, strategy.settings
    engine = PromptEngine(strategy.engine.tokenizer, loaded.model, max_length=context_budget(exp),
                          batch_size=s.batch_size or exp.train.eval_batch_size)
    metric = exp.train.metric_for_best or exp.metrics[0]
    labels = strategy.label_names

    def evaluate(candidate, examples: list[dict]) -> dict:
        predictions = [o["prediction"] for o in engine.predict(candidate, examples)]
        return compute_metrics(exp.metrics, predictions, [e["label"] for e in examples], labels=labels or None)

    was_training = loaded.model.training
    loaded.model.eval()  # no dropout while scoring candidates; training mode is restored for the trainer
    chosen, record = search_prompt(exp, engine, plan, splits, words=s.search_label_words,
                                   generation=s.generate_templates, evaluate=evaluate, metric=metric)
    loaded.model.train(was_training)
    write_search_record(run_dir, record)
    return chosen.replace(search=record)
