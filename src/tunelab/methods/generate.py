"""Generation tasks (`task.type: generation`): the answer is generated text, scored by BLEU / ROUGE /
exact match against the example's `target`.

- `generate`: zero- or few-shot prompting — the template (and k training demonstrations, each
  followed by its target) → greedy or sampled continuation, cut at stop strings.
- `sft`: supervised fine-tuning on (prompt, target) pairs with the loss on target tokens only
  (`tunelab.generation`), then the same generation. `train:` picks the model change (`lm_delta`).

    task: {type: generation, target_field: target}
    prompt: {template: "Article: {{ text }}\\nOne-sentence summary:", use_chat_template: false}
    strategy: {name: generate, k: 0, generation: {max_new_tokens: 48, stop: ["\\n"]}}
    metrics: [rouge1, rouge2, rougeL]

`generate` also answers extractive QA (`task.type: extractive_qa`): the template shows the context
and the question (`{{ context }}`, `{{ question }}`), demonstrations end with their first gold
answer, and `squad_em` / `squad_f1` score the generated text against every gold answer.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

from pydantic import Field

from tunelab.costs import parameter_costs, peak_memory_mb
from tunelab.data.loaders import SOURCE_KEY
from tunelab.errors import ConfigError
from tunelab.generation import GenerationOptions, generate_text, train_sft
from tunelab.methods.classifier import train_costs
from tunelab.methods.lm_delta import LmChange
from tunelab.methods.registry import register
from tunelab.model_changes import resolve_change
from tunelab.prompts import apply_chat_template_parts, build_prompt_parts, fit_demonstrations, select_demonstrations
from tunelab.prompts.engine import with_delimiter
from tunelab.prompts.plan import (
    PromptPlan,
    check_causal_lm,
    check_fields,
    check_task,
    context_budget,
    load_plan,
    load_tokenizer_for,
    read_prompt,
    save_plan,
    where,
)
from tunelab.settings import StrictSettings


ANSWER_TASKS = ("generation", "extractive_qa")
"""Tasks whose answer is text (`target`): generated, and shown after each demonstration."""


class GenerateSettings(StrictSettings):
    k: int = Field(0, ge=0)
    """Demonstrations (training examples followed by their target) before each prompt; 0: zero-shot."""
    generation: GenerationOptions = GenerationOptions(stop=["\n\n"])
    """Decoding: max_new_tokens, do_sample, temperature, top_p, top_k, stop, seed, batch_size."""


class SftSettings(StrictSettings):
    train: str = "full"
    """The model change: `full`, `lm_head`, `bitfit`, `partial`, `adapter`, or a PEFT method (`lora`, `ia3`);
    soft prompts are not supported here."""
    delta: dict = Field(default_factory=dict)
    """Settings of the model change named by `train` (e.g. `{r: 8}` for lora); checked by its own schema."""
    generation: GenerationOptions = GenerationOptions(stop=["\n\n"])
    """Decoding after training (answers end with EOS, which also stops generation)."""


class Renderer:
    """Prompt text for generation: parts + demonstrations (each with its answer) + query, chat template."""

    def __init__(self, experiment, tokenizer, plan: PromptPlan, max_new_tokens: int):
        self.experiment, self.tokenizer, self.plan = experiment, tokenizer, plan
        self.budget = context_budget(experiment) - max_new_tokens  # prompt tokens that leave room to answer

    def answer_of(self, example: dict) -> str:
        return example["target"] if self.plan.task_type in ANSWER_TASKS else self.plan.answer_of(example)

    def render(self, example: dict, demonstrations: list[tuple[dict, str]]) -> tuple[str, str]:
        settings = self.plan.settings
        prefix, query = build_prompt_parts(settings, example, demonstrations)
        return apply_chat_template_parts(self.tokenizer, prefix, query, settings.use_chat_template)

    def prompt(self, example: dict, demonstrations: list[tuple[dict, str]] | None = None) -> str:
        """The full text the model continues; demonstrations that do not fit are dropped from the front."""
        demos = demonstrations if demonstrations is not None else [(d, self.answer_of(d)) for d in self.plan.demonstrations]
        if demos:
            count = lambda text: len(self.tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
            demos = fit_demonstrations(demos, lambda kept: "".join(self.render(example, kept)), count, self.budget)
        return "".join(self.render(example, demos))


class GenerationPredictor:
    """Generates each example's answer; `save` writes the plan (and the trained weights, for sft)."""

    def __init__(self, renderer: Renderer, lm, options: GenerationOptions, seed: int, save_weights=None):
        self.renderer, self.model, self.save_weights = renderer, lm, save_weights
        self.options = options if options.seed is not None else options.model_copy(update={"seed": seed})

    def predict(self, examples: list[dict]) -> list[dict]:
        prompts = [self.renderer.prompt(e) for e in examples]
        texts = generate_text(self.model, self.renderer.tokenizer, prompts, self.options, max_prompt_tokens=self.renderer.budget)
        return [{"prediction": text.strip()} for text in texts]

    def save(self, directory: Path) -> None:
        save_plan(self.renderer.plan, directory)
        if self.save_weights:
            self.save_weights(directory)


class GenerativeBase:
    """Checks and pieces shared by `generate` and `sft` (and reused by `cot`)."""

    tasks: tuple[str, ...] = ("generation",)

    def __init__(self, settings, experiment, label_names: list[str] | None):
        self.settings, self.experiment, self.label_names = settings, experiment, list(label_names or [])

    @functools.cached_property
    def prompt(self):
        return read_prompt(self.experiment)

    @functools.cached_property
    def tokenizer(self):
        return load_tokenizer_for(self.experiment)

    def check(self) -> None:
        check_task(self.experiment, self.strategy_name, self.tasks)
        check_causal_lm(self.experiment, self.strategy_name)
        if self.settings.generation.max_new_tokens >= context_budget(self.experiment):
            raise ConfigError(f"{where(self.experiment, 'strategy', 'generation')}generation.max_new_tokens must be "
                              "below model.max_length (the prompt needs room too)")

    def check_data(self, splits, needs_train: bool) -> None:
        exp = self.experiment
        if needs_train and not splits.train:
            raise ConfigError(f"{exp.source}: strategy '{self.strategy_name}' needs data.train")
        check_fields(exp, self.prompt, [self.prompt.template], splits.test + splits.dev + (splits.train if needs_train else []))

    def plan(self, demonstrations: list[dict] = ()) -> PromptPlan:
        return PromptPlan(self.experiment.task.type, self.prompt.model_dump(mode="json"), demonstrations=list(demonstrations),
                          k=len(demonstrations))

    def renderer(self, plan: PromptPlan) -> Renderer:
        return Renderer(self.experiment, self.tokenizer, plan, self.settings.generation.max_new_tokens)

    def load_base(self, name: str | None = None):
        from tunelab.models import load_model

        cfg = self.experiment.model
        return load_model(name or cfg.name, "causal_lm", device=cfg.device, dtype=cfg.dtype,
                          trust_remote_code=cfg.trust_remote_code)

    def preview(self, splits, n: int) -> list[str]:
        plan = self.preview_plan(splits)
        renderer = self.renderer(plan)
        blocks = []
        for i, example in enumerate(splits.test[:n], start=1):
            text = renderer.prompt(example)
            tokens = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            blocks.append(f"=== prompt {i}: {example.get(SOURCE_KEY, '')}, {tokens} tokens ===\n{text}")
        return blocks

    def preview_plan(self, splits) -> PromptPlan:
        return self.plan()


@register("generate", "Zero/few-shot prompting for generation tasks: the continuation is the answer", family="prompting")
class GenerateStrategy(GenerativeBase):
    Settings = GenerateSettings
    tasks = ANSWER_TASKS  # extractive QA: the generated answer is scored by squad_em / squad_f1
    trains = False  # prompting reads the model as it is (train.adversarial refuses it)

    @classmethod
    def uses_seed(cls, settings) -> bool:
        """Zero-shot greedy decoding gives the same text for every seed: a sweep runs it once."""
        return bool(settings.k) or settings.generation.reads_train_seed()

    def demonstrations(self, splits) -> list[dict]:
        return select_demonstrations(splits.train, self.settings.k, "random", seed=self.experiment.train.seed)

    def preview_plan(self, splits) -> PromptPlan:
        return self.plan(self.demonstrations(splits))

    def fit(self, splits, run_dir: Path):
        self.check_data(splits, needs_train=self.settings.k > 0)
        plan = self.plan(self.demonstrations(splits))
        lm = self.load_base().model.requires_grad_(False)
        costs = {**parameter_costs(lm), "train_seconds": 0.0, "demonstrations": len(plan.demonstrations),
                 "peak_memory_mb": peak_memory_mb(next(lm.parameters()).device)}
        return GenerationPredictor(self.renderer(plan), lm, self.settings.generation, self.experiment.train.seed), costs

    def load(self, run_dir: Path):
        lm = self.load_base().model.requires_grad_(False)
        return GenerationPredictor(self.renderer(load_plan(run_dir)), lm, self.settings.generation, self.experiment.train.seed)


@register("sft", "Supervised fine-tuning on prompt → target pairs, loss on target tokens only; then generate",
          family="fine-tuning")
class SftStrategy(GenerativeBase):
    Settings = SftSettings

    @classmethod
    def check_pairing(cls, settings: SftSettings, experiment) -> None:
        """The model change exists, pairs with an LM read-out and takes `delta` (a sweep checks every cell so)."""
        resolve_change(experiment, cls.strategy_name, settings.train, settings.delta, "generation")

    @functools.cached_property
    def change(self) -> LmChange:
        return LmChange.resolve(self.experiment, "sft", self.settings.train, self.settings.delta, "causal_lm")

    def check(self) -> None:
        super().check()
        if self.change.soft_prompt:
            raise ConfigError(f"{where(self.experiment, 'strategy', 'train')}sft trains on left-padded batches, which "
                              "soft prompts do not support; use train: full, lm_head, bitfit, partial, adapter, lora or ia3")
        for key in ("label_smoothing", "rdrop_alpha"):  # train.dropout does apply to sft
            if getattr(self.experiment.train, key):
                raise ConfigError(f"{where(self.experiment, 'train', key)}train.{key} applies to label read-outs "
                                  "(a classification head, pet's verbalizer), not to sft's loss over target tokens")
        self.change.check()

    def pairs(self, renderer: Renderer, examples: list[dict]) -> list[tuple[str, str]]:
        pairs = []
        for example in examples:
            prompt = renderer.prompt(example)
            pairs.append((prompt, with_delimiter(prompt, example["target"])))
        return pairs

    def fit(self, splits, run_dir: Path):
        from transformers import set_seed

        self.check_data(splits, needs_train=True)
        exp, plan = self.experiment, self.plan()
        renderer = self.renderer(plan)
        train, dev = self.pairs(renderer, splits.train), self.pairs(renderer, splits.dev)
        set_seed(exp.train.seed)
        loaded = self.load_base()
        lm = self.change.apply(loaded)
        costs = parameter_costs(lm)
        stats = train_sft(lm, loaded.tokenizer, train, dev, exp.train, context_budget(exp), run_dir)
        costs.update(train_costs(stats, lm))
        save = lambda directory: self.change.save(lm, directory, loaded)  # noqa: E731
        return GenerationPredictor(renderer, lm, self.settings.generation, exp.train.seed, save), costs

    def load(self, run_dir: Path):
        _, lm = self.change.load(run_dir, self.load_base)
        return GenerationPredictor(self.renderer(load_plan(run_dir)), lm, self.settings.generation, self.experiment.train.seed)
