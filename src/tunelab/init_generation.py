"""`tunelab init` for text-to-text data: a text and an answer to write (a summary, a number, a free-form reply).

Recognised when the answer field is clear — `--label-field`, or the one conventional answer name
(`target`, `label`, `summary`, `answer`, ...) — and most records hold an answer of their own, which
is what makes it no label set (`data.fields.is_free_text`, the rule classification refuses by).
Every record is checked the way a run reads it, and the lengths come from the data in SmolLM2's
own tokens: the context fits the longest prompt and answer, `max_new_tokens` the longest answer,
few-shot takes as many demonstrations as fit a 2,048-token prompt (at most 4). Short answers
(a median of three words or fewer: numbers, names, dates) are scored by exact match, longer ones
by ROUGE. The sweep: zero-shot and few-shot generation and `sft` (LoRA) on the K training pairs,
all on the embedded LM, as measured on arithmetic_3d_add and gem_xsum (README).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from tunelab.config import TaskConfig
from tunelab.data.check import percentile
from tunelab.data.fields import LABEL_NAMES, choose_text, is_free_text, mostly, record_fields
from tunelab.errors import DataError
from tunelab.init_experiment import TEST_FRACTION, round_up

ANSWER_NAMES = LABEL_NAMES + ("summary", "answer", "output", "response", "completion")
LM = "smollm2-135m"
K, DEV_K = 32, 16  # examples in all (not per class): two cells' worth of sft steps on a laptop CPU
SHORT_ANSWER_WORDS = 3
MAX_TEST_SHORT, MAX_TEST_LONG = 200, 50  # generation costs per new token: long answers get a smaller test sample
FEW_SHOT_MAX, FEW_SHOT_PROMPT = 4, 2048
PROMPT_OVERHEAD = 16  # the template's own words and the answer cue, in tokens
TOKENS_PER_STEP = 2048  # sft's batch: its activations grow with batch × length


@dataclass(frozen=True)
class GenerationFields:
    text: str
    target: str
    notes: tuple[str, ...]


def generation_fields(records: list[dict], source: str, text_field: str | None,
                      label_field: str | None) -> GenerationFields | None:
    """The text and answer fields when the records are text-to-text; None when they are not (or not clearly)."""
    fields = record_fields(records)
    is_text = lambda v: isinstance(v, str) and v.strip() != ""  # noqa: E731
    if label_field is not None:
        target, how = label_field, "given by --label-field"
    else:
        named = [f for f in fields if f.lower() in ANSWER_NAMES and mostly(records, f, is_text, 0.5)]
        if len(named) != 1:
            return None  # none, or several: the classification path names the option to pass
        target, how = named[0], "a conventional answer name"
    answers = [r[target] for r in records if is_text(r.get(target))]
    if not is_free_text(answers, len(records)):
        return None
    if text_field is not None:
        text, text_how = text_field, "given by --text-field"
    else:
        text, text_how = choose_text(records, [f for f in fields if f != target], source)
    notes = (f"text to generate: field {target!r} holds {len(set(answers))} distinct answers in {len(records)} records "
             f"({how}); task.type generation", f"text field: {text!r} ({text_how})")
    return GenerationFields(text, target, notes)


def checked(fields: GenerationFields, train: list[dict], test: list[dict] | None) -> tuple[list[dict], list[dict]]:
    """(train, test) normalised by the run's own checks; DataError naming the first bad record."""
    return normalised(TaskConfig(type="generation", text_field=fields.text, target_field=fields.target), train, test)


def normalised(task: TaskConfig, train: list[dict], test: list[dict] | None) -> tuple[list[dict], list[dict]]:
    """(train, test), each record checked as a run reads it; without a test file, the split the run will hold out
    of the training file (data.test_fraction) and what it leaves."""
    from tunelab.data.sampling import held_out_test
    from tunelab.data.validate import normalise_records

    train_examples = normalise_records(train, task, "train", None)
    if test is None:
        return held_out_test(train_examples, TEST_FRACTION, None)
    return train_examples, normalise_records(test, task, "test", None)


def lm_token_counter():
    """Text → its length in the embedded LM's tokens (the tokenizer only; no weights)."""
    from tunelab.models import load_tokenizer, resolve_model_path

    tokenizer = load_tokenizer(resolve_model_path(LM), False)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def split_sizes(train_count: int, unit: str) -> tuple[int, int]:
    """(K, dev K) drawn from the training file, disjoint: dev at most 16 (half when fewer), K at most 32 of the rest."""
    if train_count < 2:
        raise DataError(f"the training file holds {train_count} {unit}(s); K-shot training needs at least 2 "
                        f"(one for train, one for dev)")
    dev_k = min(DEV_K, train_count // 2)
    return min(K, train_count - dev_k), dev_k


@dataclass(frozen=True)
class Sizes:
    k: int
    dev_k: int
    max_test: int
    max_length: int
    """Context of zero-shot and sft: the longest prompt plus the longest answer."""
    few_shot: int
    few_shot_length: int
    max_new_tokens: int
    short: bool
    stop_at_newline: bool


def measure(train: list[dict], test: list[dict]) -> Sizes:
    """Sizes from the data in SmolLM2's tokens (the tokenizer only; no weights)."""
    k, dev_k = split_sizes(len(train), "example")
    count = lm_token_counter()
    text = percentile([count(e["text"]) for e in train + test], 99)  # the longest 1% keep their end (the answer cue)
    longest_answer = max(count(" " + e["target"]) for e in train)
    example = text + longest_answer + PROMPT_OVERHEAD
    few_shot = max(0, min(FEW_SHOT_MAX, FEW_SHOT_PROMPT // example - 1))
    short = statistics.median(len(e["target"].split()) for e in train) <= SHORT_ANSWER_WORDS
    return Sizes(k=k, dev_k=dev_k, max_test=MAX_TEST_SHORT if short else MAX_TEST_LONG,
                 max_length=round_up(example + longest_answer // 4, 64), few_shot=few_shot,
                 few_shot_length=round_up((few_shot + 1) * example, 64), short=short,
                 max_new_tokens=round_up(longest_answer + longest_answer // 4 + 2, 8),
                 stop_at_newline=not any("\n" in e["target"].strip() for e in train))


def template(train: list[dict]) -> str:
    """Questions get Question/Answer, anything else Input/Output: generic on purpose (the file says to replace it)."""
    questions = sum(e["text"].rstrip().endswith("?") for e in train)
    return "Question: {{ text }}\nAnswer:" if questions >= len(train) / 2 else "Input: {{ text }}\nOutput:"


def metric_line(sizes: Sizes) -> str:
    if sizes.short:
        return "metrics: [exact_match]   # short answers (a median of 3 words or fewer): right or wrong as a whole"
    return "metrics: [rouge1, rouge2, rougeL]   # longer answers: n-gram overlap with the reference"


def generation_settings(sizes: Sizes) -> str:
    stop = ', stop: ["\\n"]' if sizes.stop_at_newline else ""
    return f"{{max_new_tokens: {sizes.max_new_tokens}{stop}}}"


def body_lines(fields: GenerationFields, sizes: Sizes, train: list[dict], test_count: int) -> tuple[list, list, list]:
    """(model+task lines, data-size lines, train/metric/prompt lines) for init_experiment's frame."""
    q = lambda value: f'"{value}"'  # noqa: E731  (field names are plain words)
    head = [
        "model:",
        f"  name: {LM}      # the embedded LM (134.5M): every entry writes the answer; see `tunelab models`",
        f"  max_length: {sizes.max_length}        # prompt and answer in SmolLM2 tokens: the 99th percentile text, the longest answer",
        "task:",
        "  type: generation",
        f"  text_field: {q(fields.text)}",
        f"  target_field: {q(fields.target)}   # the reference answer each output is scored against",
    ]
    sample = [f"  max_test: {sizes.max_test}          # a random {sizes.max_test} of the test split (seeded: the same for every cell)",
              "  max_test_seed: 0"] if test_count > sizes.max_test else []
    size = [f"  k_shot: {sizes.k}             # examples in all (not per class), drawn per seed", f"  dev_k_shot: {sizes.dev_k}",
            *sample]
    rest = [
        "train:",
        "  epochs: 5",
        "  learning_rate: 1.0e-3  # for sft's LoRA; its best dev epoch is kept",
        *batch_lines(sizes.max_length),
        "  log_to: [csv]          # also: tensorboard, mlflow, wandb (pip install 'tunelab[tracking]')",
        metric_line(sizes),
        "prompt:                  # generic: a task-specific instruction or template is the first thing to improve",
        f"  template: {json_string(template(train))}",
        "  use_chat_template: false",
    ]
    return head, size, rest


def batch_lines(max_length: int) -> list[str]:
    """About 2,048 tokens a step (at most 8 examples), 4 examples an update where fewer fit: sft on gem_xsum's
    1,920-token prompts was killed for memory at batch size 4 with two cells at once; at 1 (×4) it peaked near 4.4 GB."""
    batch = max(1, min(8, TOKENS_PER_STEP // max_length))
    lines = [f"  batch_size: {batch}"]
    if batch < 4:
        lines.append(f"  gradient_accumulation_steps: {4 // batch}   # long prompts: {batch} a step, 4 an update")
    return lines


def json_string(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)


def entry_lines(sizes: Sizes) -> list[str]:
    settings = generation_settings(sizes)
    lines = [f"    - {{name: generate, id: zero-shot, settings: {{k: 0, generation: {settings}}}}}   # prompting: the LM as it is"]
    if sizes.few_shot:
        lines.append(f"    - {{name: generate, id: few-shot, settings: {{k: {sizes.few_shot}, generation: {settings}}}, "
                     f"model: {{name: {LM}, max_length: {sizes.few_shot_length}}}}}   # {sizes.few_shot} demonstration(s) first")
    lines.append(f"    - {{name: sft, id: sft-lora, settings: {{train: lora, delta: {{r: 8}}, generation: {settings}}}}}"
                 "   # fine-tuning on the K pairs, loss on the answer")
    return lines


def size_notes(sizes: Sizes, seeds: list[int]) -> list[str]:
    notes = [f"K = {sizes.k} examples (train) and {sizes.dev_k} (dev), seeds {seeds}; answers of up to "
             f"{sizes.max_new_tokens} new tokens, scored by "
             + ("exact match (short answers)" if sizes.short else "ROUGE (answers longer than 3 words)")]
    if not sizes.few_shot:
        notes.append(f"few-shot left out: one demonstration and the query do not fit {FEW_SHOT_PROMPT} tokens")
    return notes
