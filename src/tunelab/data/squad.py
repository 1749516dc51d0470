"""Extractive question answering examples in the SQuAD layout (`task.type: extractive_qa`).

A record holds a question, a context and its answers as Hugging Face's `squad` writes them::

    {"id": "...", "context": "...", "question": "...",
     "answers": {"text": ["Denver Broncos"], "answer_start": [177]}}

`answer_start` is a character offset into the context; every answer's text must be exactly what
the context holds there (a shifted offset would train the span head on the wrong tokens and is an
error naming the file and line). The field names are `task.question_field`, `task.context_field`,
`task.answers_field`.

The example keeps the record and adds the canonical keys: `text` (the question), `text_pair`
(the context), `target` (the first answer: what a span head is trained on and what a prompting
demonstration shows), `answer_texts` (all gold answers: the references of `squad_em`, `squad_f1`)
and `answer_start` (the first answer's character offset).
"""

from __future__ import annotations

from tunelab.errors import DataError

LAYOUT = '{"text": ["..."], "answer_start": [N]} (SQuAD layout: character offsets into the context)'


def normalise_qa(record: dict, task, where: str, answers_needed: bool = True) -> dict:
    """The example of one QA record; `answers_needed=False` for `tunelab predict` inputs."""
    from tunelab.data.validate import text_field

    question = text_field(record, task.question_field, where)
    context = text_field(record, task.context_field, where)
    example = dict(record, text=question, text_pair=context)
    if not answers_needed and record.get(task.answers_field) is None:
        return example
    texts, starts = answers_of(record, task.answers_field, context, where)
    return dict(example, target=texts[0], answer_texts=texts, answer_start=starts[0])


def answers_of(record: dict, field: str, context: str, where: str) -> tuple[list[str], list[int]]:
    from tunelab.data.validate import require

    answers = require(record, field, where)
    if not isinstance(answers, dict) or not isinstance(answers.get("text"), list) or not isinstance(answers.get("answer_start"), list):
        raise DataError(f"{where}: field {field!r} must be {LAYOUT}, got {short(answers)}")
    texts, starts = answers["text"], answers["answer_start"]
    if not texts or len(texts) != len(starts):
        raise DataError(f"{where}: field {field!r} needs at least one answer and as many answer_start offsets as "
                        f"texts (got {len(texts)} texts, {len(starts)} offsets)")
    for n, (text, start) in enumerate(zip(texts, starts)):
        check_answer(text, start, context, f"{where}: {field}", n)
    return list(texts), list(starts)


def check_answer(text, start, context: str, where: str, n: int) -> None:
    """The answer's text must be what the context holds at its offset."""
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}.text[{n}] must be non-empty text, got {short(text)}")
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise DataError(f"{where}.answer_start[{n}] must be a character offset (an integer >= 0), got {short(start)}")
    found = context[start : start + len(text)]
    if found != text:
        raise DataError(f"{where}.answer_start[{n}] = {start} does not match its text {text!r}: the context holds "
                        f"{found!r} there. {where_text_is(text, context)}")


def where_text_is(text: str, context: str) -> str:
    """How to fix a wrong offset: where the text does occur (or that it does not)."""
    offsets, at = [], context.find(text)
    while at >= 0 and len(offsets) < 5:
        offsets.append(at)
        at = context.find(text, at + 1)
    if not offsets:
        return "The text does not occur in the context at all: an extractive answer must be a span of it."
    return f"Set answer_start to where the text occurs: {', '.join(map(str, offsets))}."


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_qa_line(line: str, task, where: str) -> dict:
    """One `tunelab predict` input: a JSON object with the question and the context (answers optional)."""
    import json

    from tunelab.data.loaders import SOURCE_KEY

    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: invalid JSON ({err.msg}); an extractive QA input is a JSON object with "
                        f"{task.question_field!r} and {task.context_field!r}") from None
    if not isinstance(record, dict):
        raise DataError(f"{where}: an extractive QA input is a JSON object with {task.question_field!r} and "
                        f"{task.context_field!r}, got {type(record).__name__}")
    return normalise_qa(dict(record, **{SOURCE_KEY: where}), task, where, answers_needed=False)


QA_METRICS = ("squad_em", "squad_f1")


def check_qa_metrics(config) -> None:
    """Extractive QA scores against every gold answer: only the SQuAD metrics take a list of them
    (accuracy, F1 over classes or ROUGE would fail, or score one answer, after the whole run)."""
    from tunelab.errors import ConfigError

    others = [name for name in config.metrics if name not in QA_METRICS]
    if config.task.type == "extractive_qa" and others:
        raise ConfigError(f"{config.locate('metrics')}: task.type extractive_qa is scored by {' and '.join(QA_METRICS)} "
                          f"(against the best of each question's gold answers), not {', '.join(others)}; "
                          f"set metrics: [squad_f1, squad_em]")
