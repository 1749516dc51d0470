"""Read raw records from JSON Lines, JSON, CSV/TSV files or a Hugging Face `datasets` split.

Every record carries where it came from (`file:line`) so validation errors can point at it.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from pathlib import Path

from tunelab.errors import DataError

Record = dict
SOURCE_KEY = "_source"
ROW_SHAPE_KEY = "_row_shape"  # CSV/TSV rows whose number of values differs from the header's


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
    return decode_utf8(path.read_bytes(), str(path), "re-save the file as UTF-8")


def decode_utf8(data: bytes, where: str, fix: str) -> str:
    """UTF-8 text; bytes that are not UTF-8 name their line (`where:line`) and how to fix them.
    A leading byte-order mark (Excel and Notepad write one) is dropped, not read as part of the text."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(f"{at_line(where, line)}: text is not valid UTF-8 ({err.reason}, byte 0x{data[err.start]:02x}); {fix}") from None


def at_line(source: str, number: int) -> str:
    """`file:3`, or `standard input, line 3` (a colon after words reads as a label, not a place)."""
    return f"{source}, line {number}" if source == "standard input" else f"{source}:{number}"


def physical_lines(text: str) -> list[str]:
    """Lines split at \\n (and \\r\\n) only, numbered as editors and `wc -l` count them.

    `str.splitlines()` also splits at U+2028, U+0085 and other characters that are legal inside a
    JSON string or a piece of text, which would cut one record in two.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_jsonl(path: Path, problems: list[str] | None = None) -> list[Record]:
    """Records of a JSON Lines file. With `problems`, a bad line is listed there and skipped instead of
    raised (`tunelab data check` reports every bad line at once)."""
    records = []
    for number, line in enumerate(physical_lines(read_text(path)), start=1):
        if not line.strip():
            continue
        try:
            records.append(json_record(line, f"{path}:{number}"))
        except DataError as err:
            if problems is None:
                raise
            problems.append(str(err))
    return records


def json_record(line: str, where: str) -> Record:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: invalid JSON ({err.msg}, column {err.colno})") from None
    if not isinstance(record, dict):
        raise DataError(f"{where}: each line must be a JSON object, got {type(record).__name__}")
    record[SOURCE_KEY] = where
    return record


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
    """CSV/TSV rows as records. The csv module reads the file itself (`newline=""`), so a quoted value
    may hold line breaks and no character inside a value (U+2028, U+0085...) ends a row."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        # utf-8-sig: a leading byte-order mark is not part of the first column's name
        with open(path, newline="", encoding="utf-8-sig") as handle:
            # strict: a quote that never closes is an error, not the rest of the file swallowed into one value
            return rows_as_records(csv.reader(handle, delimiter=delimiter, strict=True), path)
    except UnicodeDecodeError:
        read_text(path)  # decodes the whole file to name the line of the bad bytes (raises DataError)
        raise


def rows_as_records(reader, path: Path) -> list[Record]:
    """Records keyed by the header; `_source` is the line where a row STARTS (`reader.line_num` is where it
    ends: a quoted value can span lines). A row with too few or too many values says so in `_row_shape`."""
    records, end = [], 0
    try:
        header = next(reader, [])
        if not header:
            raise DataError(f"{path}: no header row; the first line must name the columns")
        end = reader.line_num
        for row in reader:
            start, end = end + 1, reader.line_num
            if row:  # not a blank line
                records.append(row_record(header, row, f"{path}:{start}"))
    except csv.Error as err:
        raise DataError(f"{path}:{end + 1}: cannot parse the row that starts on this line ({err}); {csv_fix(err)}") from None
    return records


def csv_fix(err: csv.Error) -> str:
    if "NUL" in str(err):
        return "the file holds NUL bytes; save it as plain UTF-8 text"
    return "check its quotes: a value that starts with a quote must end with one (double a quote inside it)"


def row_record(header: list[str], row: list[str], source: str) -> Record:
    record: Record = dict.fromkeys(header)  # a short row leaves its last columns None, as csv.DictReader does
    record.update(zip(header, row))
    if len(row) != len(header):
        record[ROW_SHAPE_KEY] = f"the row has {len(row)} values for {len(header)} columns"
    record[SOURCE_KEY] = source
    return record


def load_hf_split(source: str) -> list[Record]:
    """`hf:glue@sst2:validation` → datasets.load_dataset('glue', 'sst2', split='validation').

    NAME may also be a local folder of data files (`hf:./my_data:train`), which is how it is tested
    offline. A hub name is loaded in offline mode (the local cache only) when the hub is unreachable,
    so it fails at once instead of after half a minute of download retries.
    """
    name, sep, split = source[3:].rpartition(":")
    if not sep or not name or not split:
        raise DataError(f"{source!r}: expected hf:NAME[@CONFIG]:SPLIT, e.g. hf:glue@sst2:validation")
    name, _, config = name.partition("@")
    local = Path(name).expanduser().is_dir()
    if not local and name.startswith((".", "/", "~")):
        raise DataError(f"{source}: folder {name} not found; check the path (relative paths start from the current directory)")
    offline = not local and hub_unreachable()
    try:
        import datasets

        with hub_offline(offline):
            dataset = datasets.load_dataset(name, config or None, split=split)
    except Exception as err:  # datasets raises many types (FileNotFoundError, ConnectionError, ValueError)
        if offline:
            raise DataError(offline_message(source, name, split)) from None
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise DataError(f"{source}: cannot load this datasets split ({type(err).__name__}: {reason})") from None
    return [dict(record, **{SOURCE_KEY: f"{source} row {i}"}) for i, record in enumerate(dataset)]


def hub_unreachable() -> bool:
    """Offline mode for datasets (HF_DATASETS_OFFLINE) or for the hub, or the hub's host does not resolve."""
    from tunelab.models import hub_reachable

    return os.environ.get("HF_DATASETS_OFFLINE", "0").lower() not in ("0", "", "false", "no", "off") or not hub_reachable()


@contextlib.contextmanager
def hub_offline(offline: bool):
    """Put `datasets` and `huggingface_hub` in offline mode for one call (both read these flags at call time)."""
    if not offline:
        yield
        return
    import datasets.config
    import huggingface_hub.constants as hub

    saved = datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE = saved


def offline_message(source: str, name: str, split: str) -> str:
    return (f"{source}: the Hugging Face hub is unreachable (no network, or HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is "
            f"set) and {name!r} is neither a local folder nor a dataset in the local cache; use a local data file "
            f"(.jsonl, .json, .csv or .tsv) or a local folder of data files as hf:./FOLDER:{split}")
