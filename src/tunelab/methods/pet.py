"""`pet`: pattern-exploiting training / prompt-based fine-tuning (Schick & Schütze 2021; LM-BFF).

The label is read out the way zero-shot prompting reads it — a cloze template and a verbalizer
(`prompt:`) — and the model is trained so that the right label word wins::

    x ─template─► "Review: <text>\\nSentiment:"      (causal LM: the answer is the NEXT token)
                  "<text> It was {{ mask }}."        (masked LM: the answer sits at the mask)
    z = LM logits at the answer position, (B, V)
    s[b, w] = z[b, first token of word w]            (B, W)  every label word
    s[b, l] = aggregate_{w ∈ words(l)} s[b, w]       (B, L)  max | mean | logsumexp
    loss    = cross-entropy(softmax over the L labels, gold label)

Multi-token label words are represented by their FIRST token (in training and in prediction);
two labels whose words start with the same token are refused, since the model could not tell
them apart (`pet_choices` scores every token of one word per label). At initialisation (single-token words, `max`) the predictions equal `zero_shot`'s.

How the model changes is a separate choice, `train:` — any model change that pairs with an LM
read-out (`tunelab.model_changes`): `full` (every weight), `lm_head` (only the LM head; with tied
embeddings, as in SmolLM2, that matrix is also the input embedding), `bitfit`, `partial`,
`adapter`, any PEFT strategy's name (`lora`, `ia3`, `prompt_tuning`, ...) or a registered change of
your own, with its settings under `delta:` (`tunelab.methods.lm_delta`). `head` makes no sense here
(no new head to train), nor `none` (nothing would train: that is `zero_shot`); both exit 2 before
any weight loads. The read-out is `verbalizer` (`tunelab.readouts`). One template composes with each::

    strategy: {name: pet, train: lora, delta: {r: 8}}
    strategy: {name: pet, train: bitfit, delta: {add_biases: true}}   # Llama has no biases of its own
    strategy: {name: pet, train: adapter, delta: {kind: pfeiffer, reduction_factor: 16}}

With `search_label_words` and/or `generate_templates` (causal LMs), the template and words are
chosen before training by the untrained model's zero-shot dev score (`tunelab.methods.pet_search`).

With `demonstrations:`, one filled-in prompt per label from the K-shot train split precedes every
input, in training and at test time, and dev/test predictions average several demonstration sets
(LM-BFF; `tunelab.methods.pet_demos`)::

    strategy: {name: pet, demonstrations: {per_label: 1, selection: similar, test_sets: 4}}
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
from tunelab.errors import ConfigError
from tunelab.methods.classifier import train_costs
from tunelab.methods.lm_delta import LmChange
from tunelab.methods.pet_demos import Demonstrations, DemonstrationSettings
from tunelab.methods.pet_model import PetCollator, PetModel, encode_examples, mask_token_of
from tunelab.methods.registry import register
from tunelab.metrics import compute_metrics
from tunelab.model_changes import resolve_change
from tunelab.outputs import label_outputs
from tunelab.prompts import resolve_template, template_fields
from tunelab.prompts.autotemplate import TemplateGeneration
from tunelab.prompts.engine import PromptEngine, preview
from tunelab.prompts.plan import (
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
from tunelab.prompts.search import LabelWordSearch
from tunelab.readouts.verbalizer import lm_kind
from tunelab.settings import StrictSettings

PREFLIGHT_EXAMPLES = 8
"""Examples per split `check_splits` encodes: the template and words are the same for all, a few catch the data's fields."""


class PetSettings(StrictSettings):
    train: str = "full"
    """The model change: `full`, `lm_head`, `bitfit`, `partial`, `adapter`, or a PEFT strategy (`lora`, `ia3`,
    `prompt_tuning`, `prefix_tuning`, ...); `tunelab strategies` lists them all."""
    delta: dict = Field(default_factory=dict)
    """Settings of the model change named by `train` (e.g. `{r: 8}` for lora); checked by its own schema."""
    aggregation: Literal["max", "mean", "logsumexp"] = "max"
    """How a label with several words turns their logits into one."""
    batch_size: int | None = Field(None, gt=0)
    """Prediction batch size; default train.eval_batch_size."""
    search_label_words: LabelWordSearch | None = None
    """Choose label words before training: ranked by the untrained model on train, pruned on dev (LM-BFF)."""
    generate_templates: TemplateGeneration | None = None
    """Let a causal LM write templates from the training examples; the best zero-shot dev score trains (LM-BFF)."""
    demonstrations: DemonstrationSettings | None = None
    """LM-BFF: demonstrations from the K-shot train split in every input (`tunelab.methods.pet_demos`)."""


@register("pet", "Prompt-based fine-tuning: cross-entropy over the verbalizer's label words at the answer position", family="prompting")
class PetStrategy:
    Settings = PetSettings

    def __init__(self, settings: PetSettings, experiment, label_names: list[str] | None):
        self.settings, self.experiment, self.label_names = settings, experiment, list(label_names or [])
        self.demos: Demonstrations | None = None  # set from the train split (fit) or the saved plan (load)
        self.dev_sets = 1

    @functools.cached_property
    def prompt(self):
        return read_prompt(self.experiment)

    @functools.cached_property
    def causal(self) -> bool:
        """Causal LM (answer = next token) or masked LM (answer at the mask), from the config only."""
        return lm_kind(self.experiment) == "causal_lm"

    @classmethod
    def check_pairing(cls, settings: PetSettings, experiment) -> None:
        """The model change exists, pairs with an LM read-out and takes `delta` (a sweep checks every cell so)."""
        resolve_change(experiment, cls.strategy_name, settings.train, settings.delta, "verbalizer")

    @functools.cached_property
    def change(self) -> LmChange:
        """The model change named by `train`, with its settings (`delta`) checked."""
        return LmChange.resolve(self.experiment, "pet", self.settings.train, self.settings.delta, lm_kind(self.experiment))

    # --- checks before any model -------------------------------------------------------------

    def check(self) -> None:
        exp = self.experiment
        if exp.task.type == "multiple_choice":
            raise ConfigError(f"{where(exp, 'strategy', 'name')}pet trains label words of a fixed label set; a "
                              "multiple-choice task's candidates are each example's choices: use strategy pet_choices")
        check_task(exp, self.strategy_name, ("classification", "pair_classification"))
        self.causal  # noqa: B018 (refuses a model without an LM head, reading its config only)
        self.plan()  # verbalizer against the task's labels
        if self.change.soft_prompt and not self.causal:
            raise ConfigError(f"{where(exp, 'strategy', 'train')}soft-prompt methods shift the mask position; "
                              "with a masked LM use train: full, lm_head, bitfit, partial, adapter, lora or ia3")
        self.change.check()
        if (self.settings.search_label_words or self.settings.generate_templates) and not self.causal:
            key = "search_label_words" if self.settings.search_label_words else "generate_templates"
            raise ConfigError(f"{where(exp, 'strategy', key)}strategy.{key}: prompt search scores words with a causal LM's next-token "
                              "logits; use a causal model (e.g. smollm2-135m) or set the template and words by hand")

    def plan(self):
        return new_plan(self.experiment, self.prompt, self.label_names)

    def check_splits(self, splits) -> None:
        """Render and tokenise the first examples of each split (no weights): a template field the data lacks or
        label words the model cannot tell apart stop a run — and a sweep, before its first cell — at once.
        Skipped when a search chooses the prompt (the search checks its own candidates)."""
        if self.searches_prompt:
            return
        plan = self.plan()
        for name in ("train", "dev", "test"):
            self.encode(plan, getattr(splits, name)[:PREFLIGHT_EXAMPLES], name)

    def use_demonstrations(self, pool: list[dict]) -> None:
        """Demonstrations drawn from `pool` (the K-shot train split), when `demonstrations:` is set."""
        s = self.settings.demonstrations
        if s is not None:
            self.demos = Demonstrations(s, pool, self.label_names, self.experiment.train.seed, self.causal)

    @property
    def test_sets(self) -> int:
        return self.settings.demonstrations.test_sets if self.demos else 1

    def encode_sets(self, plan, examples: list[dict], split: str, sets: int) -> list[list[dict]]:
        """One feature list per demonstration set (one list, no demonstrations, without `demonstrations:`)."""
        if self.demos is None:
            return [self.encode(plan, examples, split)]
        return [self.encode(plan, examples, split, demos) for demos in self.demos.sets(examples, sets)]

    @functools.cached_property
    def engine(self) -> PromptEngine:
        return PromptEngine(load_tokenizer_for(self.experiment), max_length=context_budget(self.experiment))

    def encode(self, plan, examples: list[dict], split: str, demos: list[list[dict]] | None = None) -> list[dict]:
        """Render and tokenise (no model): field, mask and label-word errors surface here.
        `demos[i]`: the demonstrations before example i (none by default)."""
        tokenizer, exp = self.engine.tokenizer, self.experiment
        mask = mask_token_of(tokenizer, self.causal)
        rows = [{**e, "mask": mask} if mask else e for e in examples]
        uses_mask = "mask" in template_fields(resolve_template(self.prompt, set(rows[0]) if rows else {"text"}))
        if uses_mask == self.causal:
            raise ConfigError(f"{where(exp, 'prompt', 'template')}" + (
                "{{ mask }} marks the answer for masked LMs; a causal LM answers with the next token, so end the "
                "template where the label word should follow" if self.causal else
                "a masked LM needs {{ mask }} in prompt.template where the label word goes, e.g. "
                "\"{{ text }} It was {{ mask }}.\""))
        check_fields(exp, self.prompt, [self.prompt.template], rows)
        if demos is None:
            texts = [self.engine.render(plan, row, []) for row in rows]
        else:
            budget = context_budget(exp)
            texts = [self.demos.render(self.engine, plan, row, d, budget) for row, d in zip(rows, demos)]
        return encode_examples(tokenizer, texts, rows, plan, self.causal, context_budget(exp), split,
                               self.label_names, where(exp, "prompt", "verbalizer"))

    # --- the model -----------------------------------------------------------------------------

    def load_base(self, name: str | None = None):
        from tunelab.models import load_model

        cfg = self.experiment.model
        return load_model(name or cfg.name, lm_kind(self.experiment), device=cfg.device, dtype=cfg.dtype,
                          trust_remote_code=cfg.trust_remote_code)

    def prepare(self, loaded) -> torch.nn.Module:
        """Choose what trains (`train:`); returns the (maybe PEFT-wrapped) LM."""
        return self.change.apply(loaded)

    def wrap(self, lm, plan) -> PetModel:
        return PetModel(lm, causal=self.causal, words_per_label=[len(plan.verbalizer[l]) for l in plan.labels],
                        aggregation=self.settings.aggregation)

    def fit(self, splits, run_dir: Path):
        if self.searches_prompt and not splits.dev:
            raise ConfigError(f"{self.experiment.source}: pet's prompt search chooses on the dev split: set data.dev or data.k_shot")
        plan, train, dev = self.encode_splits(splits)
        return self.train_on(plan, train, dev, run_dir, splits=splits)

    @property
    def searches_prompt(self) -> bool:
        return bool(self.settings.search_label_words or self.settings.generate_templates)

    def encode_splits(self, splits, plan=None) -> tuple:
        """(plan, train features, dev features); the test prompts are checked too — all before any weight loads."""
        plan = plan or self.plan()
        self.use_demonstrations(splits.train)
        if self.demos is not None:
            plan = plan.replace(pool=list(splits.train))  # saved: a reloaded run draws the same demonstrations
        train = self.encode_sets(plan, splits.train, "train", 1)[0]
        dev = [f for features in self.encode_sets(plan, splits.dev, "dev", self.test_sets) for f in features]
        self.dev_sets = self.test_sets if splits.dev else 1
        self.encode(plan, splits.test, "test")  # test-prompt problems (fields, mask) before training
        return plan, train, dev

    def train_on(self, plan, train: list[dict], dev: list[dict], run_dir: Path, epochs: float | None = None,
                 splits=None):
        """Load the LM, train it on encoded features (best dev epoch kept); returns (predictor, costs). With
        `splits` and a prompt search set, the prompt is chosen first and the splits encoded again with it."""
        from transformers import set_seed

        exp = self.experiment
        set_seed(exp.train.seed)
        loaded = self.load_base()
        if self.searches_prompt and splits is not None:
            from tunelab.methods.pet_search import search_before_training

            plan = search_before_training(self, loaded, plan, splits, run_dir)
            plan, train, dev = self.encode_splits(splits, plan)  # through the demonstration path, if any
        model = self.wrap(self.prepare(loaded), plan)
        costs = parameter_costs(model)
        collator = PetCollator(self.engine.tokenizer.pad_token_id or 0)
        from tunelab.train import train_model

        cfg = exp.train if epochs is None else exp.train.model_copy(update={"epochs": epochs})
        stats = train_model(model, self.engine.tokenizer, train, dev, cfg, run_dir, score_dev=self.score_dev,
                            metric_for_best=exp.train.metric_for_best or exp.metrics[0], collator=collator,
                            dev_readout=self.dev_readout())
        costs.update(train_costs(stats, model))
        return PetPredictor(self, model, loaded, plan), costs

    def score_dev(self, logits, label_ids) -> dict:
        return self.score_probabilities(*self.dev_probabilities(logits, label_ids))

    def dev_probabilities(self, logits, label_ids) -> tuple:
        """((D, L) label distributions, (D,) gold ids) of the raw dev logits; with demonstrations the dev features
        are `dev_sets` copies, averaged like test."""
        probs = torch.as_tensor(logits).float().softmax(-1)  # (S·D, L)
        probs = probs.reshape(self.dev_sets, -1, probs.shape[-1]).mean(0)  # (D, L)
        return probs.numpy(), np.asarray(label_ids)[: len(probs)]

    def score_probabilities(self, probs, gold) -> dict:
        labels = self.label_names
        predictions = [labels[i] for i in probs.argmax(-1)]
        return compute_metrics(self.experiment.metrics, predictions, [labels[i] for i in gold], labels=labels)

    def dev_readout(self):
        from tunelab.held_out_dev import DevReadout

        return DevReadout(self.dev_probabilities, self.score_probabilities, list(self.label_names))

    def load(self, run_dir: Path):
        loaded, lm = self.change.load(run_dir, self.load_base)
        plan = load_plan(run_dir)
        self.use_demonstrations(plan.pool)
        return PetPredictor(self, self.wrap(lm, plan), loaded, plan)

    def preview(self, splits, n: int) -> list[str]:
        """The first n test prompts as the model reads them; candidates = the label words (first token scored)."""
        plan = self.plan()
        self.encode(plan, splits.test[:n], "test")
        mask = mask_token_of(self.engine.tokenizer, self.causal)
        rows = [{**e, "mask": mask} if mask else e for e in splits.test[:n]]
        self.use_demonstrations(splits.train)
        if self.demos is None:
            return preview(self.engine, plan, rows)
        notes = [f"note: demonstration set 1 of {self.test_sets} (their label distributions are averaged)"]
        demos = self.demos.sets(splits.test[:n], 1)[0]
        budget = context_budget(self.experiment)
        texts = ["".join(self.demos.render(self.engine, plan, r, d, budget)) for r, d in zip(rows, demos)]
        return notes + [f"=== prompt {i}: {len(d)} demonstrations ===\n{text}"
                        for i, (d, text) in enumerate(zip(demos, texts), start=1)]


class PetPredictor:
    def __init__(self, strategy: PetStrategy, model: PetModel, loaded, plan):
        self.strategy, self.model, self.loaded, self.plan = strategy, model, loaded, plan

    def label_probs(self, examples: list[dict]) -> torch.Tensor:
        """(N, L) label distributions: softmax of the label logits, averaged over the demonstration sets."""
        s = self.strategy
        rows = [dict(e, label=None) for e in examples]  # the predictor never reads a label
        sets = s.encode_sets(self.plan, rows, "prediction", s.test_sets)
        return torch.stack([self.label_logits(features).softmax(-1) for features in sets]).mean(0)  # (S, N, L) -> (N, L)

    def label_logits(self, features: list[dict]) -> torch.Tensor:
        """(N, L) label logits of encoded features, batches sorted by length."""
        s = self.strategy
        collate = PetCollator(s.engine.tokenizer.pad_token_id or 0)
        batch_size = s.settings.batch_size or s.experiment.train.eval_batch_size
        device = next(self.model.parameters()).device

        def run(chunk: list[dict]) -> torch.Tensor:
            batch = {k: v.to(device) for k, v in collate(chunk).items()}
            return self.model(**batch)["logits"].float().cpu()  # (B, L): one row per example

        self.model.eval()
        with torch.inference_mode():
            rows = by_length(features, lambda f: len(f["input_ids"]), batch_size, run)
        return torch.stack(rows) if rows else torch.zeros(0, len(self.plan.labels))

    def predict(self, examples: list[dict]) -> list[dict]:
        if not examples:
            return []
        return label_outputs(self.label_probs(examples), self.plan.labels)  # (N, L) probabilities

    def save(self, directory: Path) -> None:
        save_plan(self.plan, directory)
        self.strategy.change.save(self.model.lm, directory, self.loaded)
