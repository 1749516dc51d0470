"""`tunelab init` for data that is not classification: named entities and extractive QA.

Recognised by conventional field names only (never a guess): a list of words in `tokens`/`words`
beside a list of IOB2 tags in `tags`/`ner_tags` (CoNLL-2003 as Hugging Face writes it, tags as
strings), or `question`, `context` and `answers` in the SQuAD layout. Every record is checked the
way a run reads it (the run's own normalisers, which name the file and line of the first bad
record), and the written sweep is the one examples/conll2003_ner.yaml or examples/squad_mini_qa.yaml
measured, sized for a laptop CPU like the classification file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunelab.config import TaskConfig
from tunelab.data.fields import mostly, record_fields
from tunelab.errors import DataError
from tunelab.init_experiment import TEST_FRACTION

TAGGING, QA = "token_classification", "extractive_qa"
TOKEN_NAMES = ("tokens", "words")
TAG_NAMES = ("tags", "ner_tags")
QA_FIELDS = ("question", "context", "answers")
SAMPLE = 200  # records looked at to recognise the layout; all of them are checked afterwards
NER_K, NER_MAX_TEST = 100, 100  # examples/conll2003_ner.yaml: K sentences in all, a seeded 100 test sentences
QA_K, QA_DEV_K, QA_MAX_TEST = 32, 16, 50  # examples/squad_mini_qa.yaml: questions, not per class


@dataclass(frozen=True)
class Shape:
    task: str
    fields: dict = field(default_factory=dict)
    """task.*_field settings (only those that differ from the defaults)."""
    description: str = ""

    @property
    def unit(self) -> str:
        """What K counts."""
        return "sentences" if self.task == TAGGING else "questions"


def detect_shape(records: list[dict]) -> Shape | None:
    """Named-entity or extractive-QA data by its conventional field names; None for anything else."""
    sample = records[:SAMPLE]
    is_list = lambda v: isinstance(v, list) and bool(v)  # noqa: E731
    tokens = [name for name in TOKEN_NAMES if mostly(sample, name, is_list, 0.5)]
    tags = [name for name in TAG_NAMES if mostly(sample, name, is_list, 0.5)]
    if tokens and tags:
        settings = {key: value for key, value in (("tokens_field", tokens[0]), ("tags_field", tags[0]))
                    if value != getattr(TaskConfig(), key)}
        return Shape(TAGGING, settings, f"named entities: words in {tokens[0]!r}, IOB2 tags in {tags[0]!r}")
    if set(QA_FIELDS) <= set(record_fields(sample)) and mostly(sample, "answers", lambda v: isinstance(v, dict), 0.5):
        return Shape(QA, {}, "extractive QA: 'question', 'context' and 'answers' (SQuAD layout)")
    return None


def checked_counts(shape: Shape, train: list[dict], test: list[dict] | None) -> tuple[int, int]:
    """(train count, test count) once every record passes the run's own checks; DataError at the first that does not.
    Without a test file, the test count is what the run holds out of the training file (data.test_fraction)."""
    from tunelab.data.sampling import held_out_count
    from tunelab.data.tokens import infer_tag_names
    from tunelab.data.validate import normalise_records

    task = TaskConfig(type=shape.task, **shape.fields)
    names = infer_tag_names(train, task) if shape.task == TAGGING else None
    normalise_records(train, task, "train", names)
    if test is not None:
        normalise_records(test, task, "test", names)
    return len(train), len(test) if test is not None else held_out_count(len(train), TEST_FRACTION)


def sizes(shape: Shape, train_count: int) -> tuple[int, int]:
    """(K, dev K) drawn from the training file, disjoint: as the examples' where the file allows."""
    k, dev_k = (NER_K, NER_K) if shape.task == TAGGING else (QA_K, QA_DEV_K)
    if train_count < 2:
        raise DataError(f"the training file holds {train_count} example(s); K-shot training needs at least 2 "
                        f"(one for train, one for dev)")
    k = min(k, train_count // 2)
    return k, min(dev_k, train_count - k)


def model_task_lines(shape: Shape) -> list[str]:
    window = "   # longer passages are read in overlapping windows of this length" if shape.task == QA else ""
    return [
        "model:",
        "  name: minilm-l6        # the embedded encoder (22.7M); see `tunelab models`",
        f"  max_length: {128 if shape.task == TAGGING else 256}{window}",
        "task:",
        f"  type: {shape.task}",
        *[f"  {key}: {value!r}" for key, value in shape.fields.items()],
    ]


def test_size(shape: Shape, test_count: int) -> int:
    """How many test examples the file evaluates: a seeded sample of this many when the file holds more."""
    return min(test_count, NER_MAX_TEST if shape.task == TAGGING else QA_MAX_TEST)


def size_lines(shape: Shape, k: int, dev_k: int, test_count: int) -> list[str]:
    max_test = test_size(shape, test_count)
    sample = [f"  max_test: {max_test}          # a random {max_test} of the test split (seeded: the same for every cell)",
              "  max_test_seed: 0"] if test_count > max_test else []
    return [f"  k_shot: {k}             # {shape.unit} in all (not per class), drawn per seed", f"  dev_k_shot: {dev_k}", *sample]


def train_metric_lines(shape: Shape) -> list[str]:
    lines = ["train:", f"  epochs: {10 if shape.task == TAGGING else 5}", "  learning_rate: 1.0e-4", "  batch_size: 8",
             "  log_to: [csv]          # also: tensorboard, mlflow, wandb (pip install 'tunelab[tracking]')"]
    if shape.task == TAGGING:
        return lines + ["metrics: [entity_f1, entity_precision, entity_recall, per_type_f1]"]
    return lines + [
        "prompt:                  # for the generating entry: the passage, the question, then the answer it writes",
        '  instruction: "Answer the question with a short span copied from the passage."',
        '  template: "Passage: {{ context }}\\nQuestion: {{ question }}\\nAnswer:"',
        "  use_chat_template: false",
        "metrics: [squad_f1, squad_em]",
    ]


def entry_lines(shape: Shape) -> list[str]:
    if shape.task == TAGGING:
        return [
            "    - {name: head, train: {learning_rate: 1.0e-2}}     # fine-tuning: a linear tagger on the frozen encoder",
            "    - {name: full, train: {learning_rate: 1.0e-4}}     # fine-tuning: every weight",
            "    - {name: lora, train: {learning_rate: 1.0e-3}}     # parameter-efficient",
            "    - {name: few_shot_ner, settings: {k: 4}, model: {name: smollm2-135m, max_length: 1024}, "
            "train: {eval_batch_size: 8}}   # prompting: the LM lists the entities",
        ]
    return [
        "    - {name: span, id: span-full, settings: {train: full}}   # a start/end head, every weight trained",
        "    - {name: span, id: span-lora, settings: {train: lora, delta: {r: 8}}, train: {learning_rate: 1.0e-3}}",
        "    - name: generate     # prompting: one demonstration, then the LM writes the answer",
        "      id: few-shot-smollm2",
        '      settings: {k: 1, generation: {max_new_tokens: 16, stop: ["\\n"]}}',
        "      model: {name: smollm2-135m, max_length: 1024}",
    ]
