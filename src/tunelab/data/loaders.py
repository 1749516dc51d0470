"""Read raw records from JSON Lines, JSON, CSV/TSV files or a Hugging Face `datasets` split.

Every record carries where it came from (`file:line`) so validation errors can point at it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tunelab.errors import DataError

Record = dict
SOURCE_KEY = "_source"


def load_records(source: str) -> list[Record]:
    """`path.jsonl|.json|.csv|.tsv` or `hf:NAME[@CONFIG]:SPLIT` → list of dicts with `_source`."""
    if source.startswith("hf:"):
        return load_hf_split(source)
    path = Path(source)
    if not path.is_file():
        raise DataError(f"data file not found: {source} (check the data section of the experiment file)")
    suffix = path.suffix.lower()
    readers = {".jsonl": read_jsonl, ".json": read_json, ".csv": read_delimited, ".tsv": read_delimited}
    if suffix not in readers:
        raise DataError(f"{source}: unsupported file type {suffix!r}; use .jsonl, .json, .csv or .tsv")
    return readers[suffix](path)


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: text is not valid UTF-8 ({err.reason}); re-save the file as UTF-8") from None


def read_jsonl(path: Path) -> list[Record]:
    records = []
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: invalid JSON ({err.msg}, column {err.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: each line must be a JSON object, got {type(record).__name__}")
        record[SOURCE_KEY] = f"{path}:{number}"
        records.append(record)
    return records


def read_json(path: Path) -> list[Record]:
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: expected a list of objects (or {{\"data\": [...]}})")
    return [dict(record, **{SOURCE_KEY: f"{path}: item {i}"}) for i, record in enumerate(data)]


def read_delimited(path: Path) -> list[Record]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.DictReader(read_text(path).splitlines(), delimiter=delimiter)
    if not reader.fieldnames:
        raise DataError(f"{path}: no header row; the first line must name the columns")
    records = []
    for record in reader:
        # DictReader's line_num is the physical line just read (header is line 1).
        record = {k: v for k, v in record.items() if k is not None}
        record[SOURCE_KEY] = f"{path}:{reader.line_num}"
        records.append(record)
    return records


def load_hf_split(source: str) -> list[Record]:
    """`hf:glue@sst2:validation` → datasets.load_dataset('glue', 'sst2', split='validation').

    NAME may also be a local folder of data files (`hf:./my_data:train`), which is how it is tested
    offline.
    """
    name, sep, split = source[3:].rpartition(":")
    if not sep or not name or not split:
        raise DataError(f"{source!r}: expected hf:NAME[@CONFIG]:SPLIT, e.g. hf:glue@sst2:validation")
    name, _, config = name.partition("@")
    try:
        import datasets

        dataset = datasets.load_dataset(name, config or None, split=split)
    except Exception as err:  # datasets raises many types (FileNotFoundError, ConnectionError, ValueError)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise DataError(f"{source}: cannot load this datasets split ({type(err).__name__}: {reason})") from None
    return [dict(record, **{SOURCE_KEY: f"{source} row {i}"}) for i, record in enumerate(dataset)]
