"""`tunelab init` for multiple-choice questions: each record has its own `choices` list, the answer in `label`.

Recognised by that layout (a list in `choices` that holds the record's `label`, in most records).
Every record is checked the way a run reads it. The sweep: the LM scores each choice after the prompt
(as examples/date_understanding.yaml) — zero-shot with the choice's summed log-probability, zero-shot per
character (longer choices are not penalised for their length; the dev split decides which is right for
the data; left out when every choice has the same length, as in date_understanding's MM/DD/YYYY), few-shot
with as many demonstrations as fit a 2,048-token prompt (at most 3) — and `pet_choices` with LoRA, which
trains that same read-out on the K questions. K counts questions in all."""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.config import TaskConfig
from tunelab.data.check import percentile
from tunelab.data.fields import choose_text, record_fields
from tunelab.init_experiment import round_up
from tunelab.init_generation import LM, batch_lines, lm_token_counter, normalised, split_sizes

SAMPLE = 200
MAX_TEST = 200
FEW_SHOT_MAX, FEW_SHOT_PROMPT = 3, 2048
PROMPT_OVERHEAD = 24  # "Question:", "Options:", "Answer:" and the separators, in tokens
EPOCHS, LORA_LEARNING_RATE = 10, "5.0e-4"  # measured on date_understanding (README: tunelab init)
TEMPLATE = "Question: {{ text }}\nOptions: {{ choices | join(', ') }}\nAnswer:"


def is_multiple_choice(records: list[dict]) -> bool:
    """A `choices` list holding the record's `label`, in at least half of the first records."""
    sample = records[:SAMPLE]
    has_answer = lambda r: isinstance(r.get("choices"), list) and r.get("label") in r["choices"]  # noqa: E731
    return bool(sample) and sum(map(has_answer, sample)) >= 0.5 * len(sample)


def text_field_of(records: list[dict], source: str, text_field: str | None) -> tuple[str, str]:
    """(the question's field, how it was chosen)."""
    if text_field is not None:
        return text_field, "given by --text-field"
    return choose_text(records, [f for f in record_fields(records) if f not in ("choices", "label")], source)


def checked(text: str, train: list[dict], test: list[dict] | None) -> tuple[list[dict], list[dict]]:
    """(train, test) normalised by the run's own checks; DataError naming the first bad record."""
    return normalised(TaskConfig(type="multiple_choice", text_field=text), train, test)


@dataclass(frozen=True)
class Sizes:
    k: int
    dev_k: int
    max_test: int
    max_length: int
    few_shot: int
    few_shot_length: int
    per_char: bool
    """Whether choices differ in length: when all have the same, per-character scores rank as summed ones do."""
    choices: int
    """The most choices a question has."""
    answer: int
    """The longest choice, in tokens: pet_choices runs a question's prompt once, then each of its choices."""


def measure(train: list[dict], test: list[dict]) -> Sizes:
    """Sizes from the questions and their choices in SmolLM2's tokens (the tokenizer only; no weights)."""
    k, dev_k = split_sizes(len(train), "question")
    count = lm_token_counter()
    question = percentile([count(e["text"] + " " + ", ".join(e["choices"])) for e in train + test], 99)
    answer = max(count(" " + choice) for e in train + test for choice in e["choices"])
    example = question + answer + PROMPT_OVERHEAD
    few_shot = max(0, min(FEW_SHOT_MAX, FEW_SHOT_PROMPT // example - 1))
    return Sizes(k=k, dev_k=dev_k, max_test=MAX_TEST, max_length=round_up(example, 64),
                 few_shot=few_shot, few_shot_length=round_up((few_shot + 1) * example, 64),
                 per_char=len({len(choice) for e in train + test for choice in e["choices"]}) > 1,
                 choices=max(len(e["choices"]) for e in train + test), answer=answer)


def body_lines(text: str, sizes: Sizes, test_count: int) -> tuple[list, list, list]:
    """(model+task lines, data-size lines, train/metric/prompt lines) for init_experiment's frame."""
    head = [
        "model:",
        f"  name: {LM}      # the embedded LM (134.5M) scores each choice after the prompt; see `tunelab models`",
        f"  max_length: {sizes.max_length}        # a question with its choices and the longest choice, in SmolLM2 tokens",
        "task:",
        "  type: multiple_choice",
        f'  text_field: "{text}"',
        '  choices_field: "choices"   # each record\'s own options; the answer, in `label`, is one of them',
    ]
    sample = [f"  max_test: {sizes.max_test}          # a random {sizes.max_test} of the test split (seeded: the same for every cell)",
              "  max_test_seed: 0"] if test_count > sizes.max_test else []
    size = [f"  k_shot: {sizes.k}             # questions in all (not per class), drawn per seed", f"  dev_k_shot: {sizes.dev_k}",
            *sample]
    rest = [
        "train:",
        f"  epochs: {EPOCHS}",
        f"  learning_rate: {LORA_LEARNING_RATE}  # for pet_choices' LoRA; its best dev epoch is kept",
        *batch_lines(sizes.max_length + sizes.choices * sizes.answer),
        "  eval_batch_size: 16     # prompts per forward pass",
        "  log_to: [csv]",
        "metrics: [accuracy]",
        "prompt:                  # generic: a task-specific instruction or template is the first thing to improve",
        f'  template: "{TEMPLATE}"'.replace("\n", "\\n"),
        "  use_chat_template: false",
    ]
    return head, size, rest


def entry_lines(sizes: Sizes) -> list[str]:
    lines = ["    - {name: zero_shot, id: zero-shot}   # each choice scored by its summed log-probability"]
    if sizes.per_char:
        lines.append("    - {name: zero_shot, id: zero-shot-per-char, settings: {length_norm: char}}   "
                     "# per character: long choices not penalised")
    if sizes.few_shot:
        lines.append(f"    - {{name: few_shot, id: few-shot, settings: {{k: {sizes.few_shot}, selection: random}}, "
                     f"model: {{name: {LM}, max_length: {sizes.few_shot_length}}}}}   # solved questions first")
    lines.append("    - {name: pet_choices, id: pet-choices-lora, settings: {train: lora, delta: {r: 8}}}   "
                 "# fine-tuning: cross-entropy over each question's choices")
    return lines


def notes(sizes: Sizes, seeds: list[int]) -> list[str]:
    lines = [f"K = {sizes.k} questions (train) and {sizes.dev_k} (dev), seeds {seeds}"]
    if not sizes.per_char:
        lines.append("zero-shot per character left out: every choice has the same length, so it ranks them as the sum does")
    if not sizes.few_shot:
        lines.append(f"few-shot left out: one solved question and the query do not fit {FEW_SHOT_PROMPT} tokens")
    return lines
