"""`tunelab predict`: label new inputs with a finished run (JSON lines or plain text lines)."""

from __future__ import annotations

import json
from pathlib import Path

from tunelab.errors import DataError


def parse_line(line: str, task, where: str) -> dict:
    """A JSON object uses the task's field names; any other line is the text itself."""
    stripped = line.strip()
    if stripped.startswith("{"):
        try:
            record = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: invalid JSON ({err.msg})") from None
        if task.text_field not in record:
            raise DataError(f"{where}: missing field {task.text_field!r}")
        example = dict(record, text=record[task.text_field])
        if task.text_pair_field and task.text_pair_field in record:
            example["text_pair"] = record[task.text_pair_field]
        return example
    return {"text": line}


def predict_lines(run_dir: Path, lines: list[str], source: str = "-") -> list[dict]:
    from tunelab.run import load_run

    config, _, predictor = load_run(run_dir)
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise DataError(f"{source}: no input lines")
    examples = [parse_line(line, config.task, f"{source}:{n}") for n, line in numbered]
    outputs = predictor.predict(examples)
    return [{"text": e["text"], **o} for e, o in zip(examples, outputs)]
