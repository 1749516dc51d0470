"""`cot`: chain-of-thought prompting — the model reasons in generated text, then the answer is read out.

- ``mode: few_shot`` (Wei et al. 2022): k training exemplars, each "<template> <rationale> So the
  answer is <word>." (the `rationale` field of the data, e.g. strategyqa), then the query; the
  model continues with its own rationale and answer.
- ``mode: zero_shot`` (Kojima et al. 2022): "<template> Let's think step by step." → reasoning;
  then a second step "<that> <reasoning>\\nTherefore, the answer is" reads the answer.

Reading the answer (`answer:`):

- ``score``: append the answer cue to the chain (few-shot: " So the answer is", cut before the
  model's own; zero-shot: "\\nTherefore, the answer is") and score the verbalizer's words with the
  prefix-cached engine — always a label. Generation tasks generate a few tokens there instead.
- ``extract``: read it from the chain itself — a verbalizer word after the last "answer is", a
  regex (`answer_pattern`), or a number (generation tasks such as arithmetic_*, whose target is an
  integer string); a chain with none falls back to ``score``.
- ``auto``: zero-shot → score (the paper's two steps); few-shot → extract.

Self-consistency (Wang et al. 2023): ``self_consistency: n`` samples n chains per example
(`generation.do_sample` is switched on; set `generation.temperature`, e.g. 0.7), reads each one's
answer and takes the majority vote; `scores` are the vote shares. Every chain and its answer is
recorded in predictions.jsonl (`chains`, `answers`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from tunelab.costs import parameter_costs, peak_memory_mb
from tunelab.errors import ConfigError, DataError
from tunelab.generation import GenerationOptions, generate
from tunelab.methods.generate import GenerativeBase, Renderer
from tunelab.methods.registry import register
from tunelab.prompts import (
    ANSWER_CUE,
    ANSWER_CUE_NUMERIC,
    Verbalizer,
    cot_demonstrations,
    extract_answer,
    majority_vote,
    select_demonstrations,
    zero_shot_cot_step2,
)
from tunelab.prompts.engine import with_delimiter
from tunelab.prompts.plan import load_plan, new_plan, save_plan, verbalizer_words, where
from tunelab.prompts.template import join_words
from tunelab.scoring import ScoreRequest, score_requests
from tunelab.settings import StrictSettings


class CotSettings(StrictSettings):
    mode: Literal["few_shot", "zero_shot"] = "few_shot"
    """few_shot: exemplars with rationales from data.train; zero_shot: "Let's think step by step." and a second step."""
    k: int = Field(4, gt=0)
    """Exemplars per prompt (few_shot; ignored by zero_shot, so one file serves both modes)."""
    selection: Literal["random", "balanced"] = "balanced"
    """How exemplars are drawn from data.train (balanced: classes in turn; generation tasks: random)."""
    rationale_field: str = "rationale"
    """The data field holding each exemplar's reasoning."""
    answer_phrase: str = "So the answer is"
    """Ends each exemplar's reasoning before its answer word; also the few-shot answer cue."""
    answer: Literal["auto", "extract", "score"] = "auto"
    """How the label is read after the reasoning (see the module docstring)."""
    answer_pattern: str | None = None
    """Regex whose last match (group 1 if any) holds the answer in the chain (extraction)."""
    self_consistency: int = Field(1, ge=1)
    """Chains per example; above 1 they are sampled and the answers majority-voted."""
    generation: GenerationOptions = GenerationOptions(max_new_tokens=128, stop=["\n\n"])
    """Decoding of the reasoning; the default stops at a blank line (the exemplar separator)."""
    batch_size: int | None = Field(None, gt=0)
    """Prompts per forward pass when scoring answer words; default train.eval_batch_size."""


@register("cot", "Chain-of-thought: few-shot with rationales or zero-shot, answer extraction, self-consistency",
          family="prompting")
class CotStrategy(GenerativeBase):
    Settings = CotSettings
    trains = False  # prompting reads the model as it is (train.adversarial refuses it)
    tasks = ("classification", "pair_classification", "generation")

    @classmethod
    def uses_seed(cls, settings) -> bool:
        """Few-shot exemplars come from the seed's draw; sampled chains (self-consistency) from its sampler."""
        sampled = settings.self_consistency > 1
        return settings.mode == "few_shot" or settings.generation.reads_train_seed(sampled)

    @property
    def numeric(self) -> bool:
        """Generation tasks (arithmetic_*) read a number unless a pattern says otherwise."""
        return self.experiment.task.type == "generation" and self.settings.answer_pattern is None

    def check(self) -> None:
        super().check()
        s, exp = self.settings, self.experiment
        if exp.task.type != "generation":
            verbalizer_words(exp, self.prompt, self.label_names)
        if s.answer_pattern is not None:
            extract_answer("", pattern=s.answer_pattern)  # a bad regex fails here, before any model

    def plan(self, demonstrations=()):
        prompt = self.prompt
        if self.settings.mode == "zero_shot" and not prompt.chain_of_thought:
            prompt = prompt.model_copy(update={"chain_of_thought": True})  # "Let's think step by step."
        if self.experiment.task.type == "generation":
            plan = super().plan(demonstrations)
            return plan.replace(prompt=prompt.model_dump(mode="json"))
        return new_plan(self.experiment, prompt, self.label_names, demonstrations=list(demonstrations), k=len(demonstrations))

    def exemplars(self, splits) -> list[dict]:
        """Few-shot exemplars from train; each must carry a rationale (checked here, before any model)."""
        if self.settings.mode == "zero_shot":
            return []
        s, exp = self.settings, self.experiment
        if not splits.train:
            raise ConfigError(f"{exp.source}: few-shot CoT draws its exemplars from data.train, which is not set "
                              "(or use strategy.mode=zero_shot)")
        method = s.selection if exp.task.type != "generation" else "random"
        chosen = select_demonstrations(splits.train, s.k, method, seed=exp.train.seed)
        answer = lambda e: e.get("target", e.get("label"))  # noqa: E731
        try:
            cot_demonstrations(chosen, rationale_key=s.rationale_field, answer_fn=answer)
        except DataError as err:  # the fix is in the experiment file: name the key (and its line, when set there)
            raise DataError(f"{where(exp, 'strategy', 'rationale_field')}{err}; set strategy.rationale_field to the "
                            "field that holds the worked reasoning, or use strategy.mode=zero_shot") from None
        return chosen

    def check_splits(self, splits) -> None:
        """The template's fields and the exemplars' rationales, before any weight loads: a sweep stops before its
        first cell rather than failing each cot cell when it gets there."""
        self.check_data(splits, needs_train=self.settings.mode == "few_shot")
        self.exemplars(splits)

    def preview_plan(self, splits):
        return self.plan(self.exemplars(splits))

    def renderer(self, plan) -> CotRenderer:
        return CotRenderer(self, plan)

    def fit(self, splits, run_dir: Path):
        self.check_data(splits, needs_train=self.settings.mode == "few_shot")
        started = time.perf_counter()
        plan = self.plan(self.exemplars(splits))
        lm = self.load_base().model.requires_grad_(False)
        costs = {**parameter_costs(lm), "train_seconds": 0.0, "demonstrations": len(plan.demonstrations),
                 "search_seconds": time.perf_counter() - started, "peak_memory_mb": peak_memory_mb(next(lm.parameters()).device)}
        return CotPredictor(self, self.renderer(plan), lm), costs

    def load(self, run_dir: Path):
        lm = self.load_base().model.requires_grad_(False)
        return CotPredictor(self, self.renderer(load_plan(run_dir)), lm)


class CotRenderer(Renderer):
    """Exemplars rendered with their rationale: "<template> <rationale> So the answer is <word>."."""

    def __init__(self, strategy: CotStrategy, plan):
        super().__init__(strategy.experiment, strategy.tokenizer, plan, strategy.settings.generation.max_new_tokens)
        s = strategy.settings
        answer = lambda e: e["target"] if plan.task_type == "generation" else plan.answer_of(e).strip()  # noqa: E731
        self.exemplars = cot_demonstrations(plan.demonstrations, answer_fn=answer, rationale_key=s.rationale_field,
                                            answer_phrase=s.answer_phrase)

    def prompt(self, example: dict, demonstrations=None) -> str:
        return super().prompt(example, self.exemplars if demonstrations is None else demonstrations)


class CotPredictor:
    def __init__(self, strategy: CotStrategy, renderer: CotRenderer, lm):
        self.strategy, self.renderer, self.model = strategy, renderer, lm
        s, seed = strategy.settings, strategy.experiment.train.seed
        options = s.generation if s.generation.seed is not None else s.generation.model_copy(update={"seed": seed})
        if s.self_consistency > 1:
            options = options.model_copy(update={"do_sample": True})
        self.options = options

    @property
    def mode(self) -> str:
        s = self.strategy.settings
        if s.answer != "auto":
            return s.answer
        return "score" if s.mode == "zero_shot" else "extract"

    def predict(self, examples: list[dict]) -> list[dict]:
        if not examples:
            return []
        n = self.strategy.settings.self_consistency
        prompts = [self.renderer.prompt(e) for e in examples]
        chains = generate(self.model, self.renderer.tokenizer, prompts, self.options, samples=n,
                          max_prompt_tokens=self.renderer.budget)  # (N, n) texts
        answers = self.read_answers(prompts, chains)  # (N, n)
        return [self.vote(row_chains, row_answers) for row_chains, row_answers in zip(chains, answers)]

    def read_answers(self, prompts: list[str], chains: list[list[str]]) -> list[list]:
        s = self.strategy.settings
        answers = [[None] * len(row) for row in chains]
        if self.mode == "extract":
            labels = None if self.strategy.numeric else self.renderer.plan.verbalizer
            for i, row in enumerate(chains):
                for j, chain in enumerate(row):
                    answers[i][j] = extract_answer(chain, labels=labels, pattern=s.answer_pattern, numeric=self.strategy.numeric)
        todo = [(i, j) for i, row in enumerate(answers) for j, a in enumerate(row) if a is None]
        if todo:  # second step: the answer cue after the reasoning
            contexts = [self.step2(prompts[i], chains[i][j]) for i, j in todo]
            for (i, j), answer in zip(todo, self.answer_after(contexts)):
                answers[i][j] = answer
        return answers

    def step2(self, prompt: str, chain: str) -> str:
        """The answer cue after the reasoning (the model's own answer phrase cut off, few-shot)."""
        s = self.strategy.settings
        if s.mode == "few_shot":
            cut = chain.rfind(s.answer_phrase)
            reasoning = (chain[:cut] if cut >= 0 else chain).rstrip()
            return join_words(prompt, reasoning, s.answer_phrase)
        return zero_shot_cot_step2(prompt, chain, ANSWER_CUE_NUMERIC if self.strategy.numeric else ANSWER_CUE)

    def answer_after(self, contexts: list[str]) -> list:
        """Labels by verbalizer scoring (classification) or a short generated answer (generation tasks)."""
        s, tokenizer = self.strategy.settings, self.renderer.tokenizer
        if self.renderer.plan.task_type == "generation":
            short = GenerationOptions(max_new_tokens=16, stop=["\n"], batch_size=self.options.batch_size)
            texts = [row[0] for row in generate(self.model, tokenizer, contexts, short)]
            return [extract_answer(t, pattern=s.answer_pattern, numeric=self.strategy.numeric) or t.strip() for t in texts]
        plan = self.renderer.plan
        verbalizer = Verbalizer(plan.verbalizer, labels=plan.labels)
        words = verbalizer.candidates().words
        requests = [ScoreRequest(c, [with_delimiter(c, w) for w in words]) for c in contexts]
        batch = s.batch_size or self.strategy.experiment.train.eval_batch_size
        rows = score_requests(self.model, tokenizer, requests, batch_size=batch)
        scores = verbalizer.aggregate(np.array([[c.logprob_sum for c in row] for row in rows]), plan.aggregation)  # (M, L)
        return verbalizer.decode(scores)

    def vote(self, chains: list[str], answers: list) -> dict:
        answers = [None if a is None else str(a) for a in answers]
        winner = majority_vote(answers)
        counted = [a for a in answers if a is not None]
        options = self.renderer.plan.labels or sorted(set(counted))
        scores = {label: counted.count(label) / max(len(counted), 1) for label in options}
        return {"prediction": "" if winner is None else winner, "scores": scores, "chains": chains, "answers": answers}

    def save(self, directory: Path) -> None:
        save_plan(self.renderer.plan, directory)
