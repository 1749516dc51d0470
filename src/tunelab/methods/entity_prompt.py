"""`few_shot_ner`: named entities by in-context extraction — a causal LM reads k tagged training
sentences, each followed by its entities as `entity: TYPE` lines, then writes those lines for the
test sentence; the lines are parsed back to word spans and IOB2 tags (`task.type: token_classification`).

    Find the named entities ... types: PER, ORG, LOC, MISC ...

    Sentence: EU rejects German call to boycott British lamb .
    Entities:
    EU: ORG
    German: MISC
    British: MISC

    Sentence: <test sentence>
    Entities:

Parsing (`parse_entities`): each generated line `NAME: TYPE` whose TYPE is one of the task's entity
types (case-insensitive) marks every not-yet-tagged occurrence of NAME's words in the sentence
(exact words first, then ignoring case); lines naming no word sequence of the sentence, unknown
types and `none` add nothing. No weight changes; demonstrations are drawn from the (K-shot)
training split by `train.seed`, the same for every test sentence, and saved in the run directory.

    strategy: {name: few_shot_ner, k: 4, generation: {max_new_tokens: 48}}
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from pydantic import Field

from tunelab.costs import parameter_costs, peak_memory_mb
from tunelab.data.loaders import SOURCE_KEY
from tunelab.data.tokens import tag_names
from tunelab.errors import ConfigError
from tunelab.generation import GenerationOptions, cut_at_stop, generate_text
from tunelab.methods.registry import register
from tunelab.metrics_ner import Entity, entity_rows, tags_of
from tunelab.prompts.plan import check_causal_lm, context_budget, load_lm, load_tokenizer_for, where
from tunelab.settings import StrictSettings

PLAN_FILE = "entity_prompt.json"
ANSWER_ENDS = ("\n\n", "Sentence:")
"""Where the entity lines end, whatever generation.stop says."""
INSTRUCTION = ("Find the named entities in the sentence. Write one line per entity as \"entity: type\", "
               "with type one of {types}. Write \"none\" when the sentence has no entity.")
CONLL_TYPES = {"PER": "person", "ORG": "organisation", "LOC": "location", "MISC": "other name"}
"""Words for CoNLL's types in the instruction (`PER (person)`); any other type is shown as it is."""


class EntityPromptSettings(StrictSettings):
    k: int = Field(4, ge=0)
    """Demonstrations (tagged training sentences with their entity lines) before each sentence; 0: zero-shot."""
    instruction: str = INSTRUCTION
    """The first line of every prompt; `{types}` becomes the entity types (e.g. `PER (person), ORG (organisation)`)."""
    generation: GenerationOptions = GenerationOptions(max_new_tokens=48, stop=list(ANSWER_ENDS))
    """Decoding of the entity lines (greedy by default)."""


def type_list(types: list[str]) -> str:
    return ", ".join(f"{t} ({CONLL_TYPES[t]})" if t in CONLL_TYPES else t for t in types)


def entity_lines(example: dict) -> str:
    rows = entity_rows(example["tokens"], example["tags"])
    return "\n".join(f"{row['text']}: {row['type']}" for row in rows) or "none"


def render(instruction: str, demonstrations: list[dict], example: dict) -> str:
    blocks = [instruction] + [f"Sentence: {d['text']}\nEntities:\n{entity_lines(d)}" for d in demonstrations]
    return "\n\n".join(blocks + [f"Sentence: {example['text']}\nEntities:\n"])


def parse_entities(text: str, tokens: list[str], types: list[str]) -> list[Entity]:
    """Spans of `tokens` named by the generated `NAME: TYPE` lines (see the module docstring)."""
    by_word = {t.lower(): t for t in types}
    taken = [False] * len(tokens)
    spans = []
    for line in text.splitlines():
        name, sep, kind = line.strip().lstrip("-*• ").rpartition(":")
        kind = by_word.get(kind.strip().strip(".").lower())
        words = name.split()
        if not sep or kind is None or not words:
            continue
        for start in occurrences(words, tokens):
            if not any(taken[start : start + len(words)]):
                spans.append(Entity(kind, start, start + len(words)))
                taken[start : start + len(words)] = [True] * len(words)
    return sorted(spans, key=lambda s: s.start)


def occurrences(words: list[str], tokens: list[str]) -> list[int]:
    """Starts of `words` in `tokens`: exact matches, else matches ignoring case."""
    n = len(words)
    exact = [i for i in range(len(tokens) - n + 1) if tokens[i : i + n] == words]
    if exact:
        return exact
    lower = [w.lower() for w in words]
    return [i for i in range(len(tokens) - n + 1) if [t.lower() for t in tokens[i : i + n]] == lower]


class EntityPromptPredictor:
    """Generates each sentence's entity lines and turns them into IOB2 tags."""

    def __init__(self, strategy, lm, plan: dict):
        self.strategy, self.model, self.plan = strategy, lm, plan

    def prompt(self, example: dict) -> str:
        """The prompt; demonstrations that leave no room for the answer are dropped from the front."""
        s = self.strategy
        budget = context_budget(s.experiment) - s.settings.generation.max_new_tokens
        demos = list(self.plan["demonstrations"])
        while True:
            text = render(self.plan["instruction"], demos, example)
            if not demos or len(s.tokenizer(text, add_special_tokens=False)["input_ids"]) <= budget:
                return text
            demos = demos[1:]

    def predict(self, examples: list[dict]) -> list[dict]:
        s = self.strategy
        options = s.settings.generation
        if options.seed is None:
            options = options.model_copy(update={"seed": s.experiment.train.seed})
        budget = context_budget(s.experiment) - options.max_new_tokens
        texts = generate_text(self.model, s.tokenizer, [self.prompt(e) for e in examples], options, max_prompt_tokens=budget)
        rows = []
        for example, text in zip(examples, texts):
            text = cut_at_stop(text, ANSWER_ENDS)  # what follows is the model's next made-up sentence
            tags = tags_of(parse_entities(text, example["tokens"], self.plan["types"]), len(example["tokens"]))
            rows.append({"prediction": " ".join(tags), "generation": text.strip()})
        return rows

    def save(self, directory: Path) -> None:
        (Path(directory) / PLAN_FILE).write_text(json.dumps(self.plan, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


@register("few_shot_ner", "In-context entity extraction: k tagged sentences, then the LM writes 'entity: type' "
          "lines, parsed back to IOB2 tags (token_classification)", family="prompting")
class EntityPromptStrategy:
    Settings = EntityPromptSettings
    trains = False  # prompting reads the model as it is

    def __init__(self, settings, experiment, label_names: list[str] | None):
        self.settings, self.experiment = settings, experiment
        self.label_names = tag_names(label_names or [])
        self.types = sorted({t[2:] for t in self.label_names if t != "O"})
        self._tokenizer = None

    @classmethod
    def uses_seed(cls, settings) -> bool:
        """The seed draws the demonstrations (and seeds sampling); zero-shot greedy decoding is the same for all."""
        return bool(settings.k) or settings.generation.reads_train_seed()

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer_for(self.experiment)
        return self._tokenizer

    def check(self) -> None:
        exp = self.experiment
        if exp.task.type != "token_classification":
            raise ConfigError(f"{exp.locate('task', 'type')}: strategy 'few_shot_ner' extracts entities and needs "
                              f"task.type: token_classification, not {exp.task.type}")
        check_causal_lm(exp, self.strategy_name)
        if self.settings.generation.max_new_tokens >= context_budget(exp):
            raise ConfigError(f"{where(exp, 'strategy', 'generation')}generation.max_new_tokens must be below "
                              "model.max_length (the prompt needs room too)")
        try:
            self.settings.instruction.format(types="")
        except (KeyError, IndexError, ValueError) as err:
            raise ConfigError(f"{where(exp, 'strategy', 'instruction')}the instruction may hold only {{types}} in braces "
                              f"(double other braces: {{{{ }}}}); {type(err).__name__}: {err}") from None

    def new_plan(self, splits) -> dict:
        k = self.settings.k
        if k and len(splits.train) < k:
            raise ConfigError(f"{self.experiment.locate('strategy', 'k')}: strategy.k={k} demonstrations, but the "
                              f"training split has {len(splits.train)} sentences; lower k or add data.train")
        drawn = random.Random(self.experiment.train.seed).sample(splits.train, k) if k else []
        return {"instruction": self.settings.instruction.format(types=type_list(self.types)), "types": self.types,
                "demonstrations": [{"tokens": d["tokens"], "tags": d["tags"], "text": d["text"]} for d in drawn]}

    def fit(self, splits, run_dir: Path):
        started = time.perf_counter()
        plan = self.new_plan(splits)
        lm = load_lm(self.experiment).model
        costs = {**parameter_costs(lm), "train_seconds": 0.0, "demonstrations": len(plan["demonstrations"]),
                 "peak_memory_mb": peak_memory_mb(next(lm.parameters()).device),
                 "search_seconds": time.perf_counter() - started}
        return EntityPromptPredictor(self, lm, plan), costs

    def load(self, run_dir: Path):
        from tunelab.artifacts import require_artifact

        plan = json.loads(require_artifact(Path(run_dir), PLAN_FILE).read_text(encoding="utf-8"))
        return EntityPromptPredictor(self, load_lm(self.experiment).model, plan)

    def preview(self, splits, n: int) -> list[str]:
        """The first n test prompts as the model reads them (`tunelab prompt`); no model is loaded."""
        predictor = EntityPromptPredictor(self, None, self.new_plan(splits))
        return [f"=== prompt {i}: {e.get(SOURCE_KEY, '')} ===\n{predictor.prompt(e)}" for i, e in enumerate(splits.test[:n], 1)]

