"""`tunelab predict`: label new inputs with a finished run (JSON lines or plain text lines)."""

from __future__ import annotations

import json
from pathlib import Path

from tunelab.data.loaders import SOURCE_KEY, at_line, json_record
from tunelab.data.validate import pair_field
from tunelab.errors import DataError


def parse_line(line: str, task, where: str) -> dict:
    """A JSON object uses the task's field names; any other line is the text itself."""
    stripped = line.strip()
    if task.type == "token_classification":
        return words_of_line(stripped, task, where)
    if task.type == "extractive_qa":
        from tunelab.data.squad import parse_qa_line

        return parse_qa_line(stripped, task, where)
    if stripped.startswith("{"):
        try:
            record = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: invalid JSON ({err.msg})") from None
        if task.text_field not in record:
            raise DataError(f"{where}: missing field {task.text_field!r}; the run reads its text from {task.text_field!r}")
        if not isinstance(record[task.text_field], str):
            raise DataError(f"{where}: field {task.text_field!r} must be text, got {type(record[task.text_field]).__name__}")
        example = dict(record, text=record[task.text_field])
        second = pair_field(task)
        if second is not None:
            if not isinstance(record.get(second), str):
                raise DataError(f"{where}: this run classifies sentence pairs and reads the second text from "
                                f"{second!r}, which this line lacks (or is not text); give both texts")
            example["text_pair"] = record[second]
        return dict(example, **{SOURCE_KEY: where})
    if pair_field(task) is not None:  # one plain line cannot say where its first text ends
        raise DataError(f"{where}: this run classifies sentence pairs; give each as a JSON line with "
                        f"{task.text_field!r} and {pair_field(task)!r}")
    return {"text": line, SOURCE_KEY: where}


def predict_lines(run_dir: Path, lines: list[str], source: str = "standard input") -> list[dict]:
    from tunelab.run import load_predictor, predict_examples, read_run

    config, strategy = read_run(run_dir)
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise DataError(f"{source}: no input lines; give one example per line (JSON or plain text)")
    examples = [parse_line(line, config.task, at_line(source, n)) for n, line in numbered]  # before weights load
    outputs = predict_examples(run_dir, load_predictor(strategy, run_dir), examples)
    if config.task.type == "token_classification":
        return [tagged_row(e, o) for e, o in zip(examples, outputs)]
    return [{"text": e["text"], **({"text_pair": e["text_pair"]} if "text_pair" in e else {}), **o}
            for e, o in zip(examples, outputs)]


def words_of_line(line: str, task, where: str) -> dict:
    """Token classification: a JSON object with the task's tokens field, or a plain line split at spaces."""
    from tunelab.data.tokens import word_list

    record = json_record(line, where) if line.startswith("{") else {task.tokens_field: line.split()}
    tokens = word_list(dict(record, **{SOURCE_KEY: where}), task.tokens_field, where)
    return dict(record, tokens=tokens, text=" ".join(tokens), **{SOURCE_KEY: where})


def tagged_row(example: dict, output: dict) -> dict:
    """What `predict` prints for a tagged sentence: its words, tags and the entities they form."""
    from tunelab.metrics_ner import entity_rows

    return {"text": example["text"], **output, "entities": entity_rows(example["tokens"], output["prediction"])}
