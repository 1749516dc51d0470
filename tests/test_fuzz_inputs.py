"""Fuzzing the checks that run before any weights load: mutated experiment and data files.

Hypothesis mutates a valid experiment (a head on a tiny BERT, or zero-shot prompting on a tiny
Llama) and its data files: keys dropped, renamed or added, values of the wrong type or range,
damaged YAML text, bytes that are not UTF-8, JSON Lines and CSV rows cut, emptied or mislabelled.
Every case must end as the CLI promises: exit 2 with one `error:` message (never a traceback),
or success; no directory half-written, and an earlier run left byte for byte as it was.

Success means the input passed every check and reached training: `run.execute` is replaced by a
recorder there (training is tested elsewhere), which keeps each case to milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import tunelab.run
from tunelab.cli import main

ROWS = [{"text": t, "label": "positive"} for t in ("good fine great", "great nice good", "lovely great fine")] + [
    {"text": t, "label": "negative"} for t in ("bad awful poor", "poor terrible bad", "dull poor awful")
]
ODD_VALUES = [None, True, 0, -1, 2**40, 1e-30, float("nan"), "", "x", "../up", "é\u2028", [], [1, "a"], {}, {"a": 1}]
KEY_TYPOS = ["nmae", "learnig_rate", "max_lenght", "temp late", "k-shot", "Name"]
FUZZ = settings(max_examples=125, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def bases(tiny_bert_dir, tiny_llama_dir) -> dict:
    head = {
        "name": "fuzz", "model": {"name": str(tiny_bert_dir), "max_length": 32, "device": "cpu"},
        "task": {"type": "classification", "label_names": ["negative", "positive"]},
        "data": {"train": "train.jsonl", "dev": "dev.csv", "test": "test.jsonl"},
        "strategy": {"name": "head"}, "metrics": ["accuracy", "f1"],
        "train": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "seed": 3, "progress_bar": False, "log_to": []},
    }
    prompt = {
        **head, "model": {"name": str(tiny_llama_dir), "max_length": 64, "device": "cpu"},
        "strategy": {"name": "zero_shot"},
        "prompt": {"template": "Review: {{ text }}\nSentiment:", "verbalizer": {"negative": " bad", "positive": " good"}},
    }
    return {"head": head, "prompt": prompt}


@pytest.fixture
def reached_training(monkeypatch) -> list:
    calls = []

    def recorder(prepared, run_dir):
        calls.append(run_dir)
        return {"test": {"accuracy": 1.0}, "dev": {}, "num_test": 1, "num_train": 1}

    monkeypatch.setattr(tunelab.run, "execute", recorder)
    return calls


# --------------------------------------------------------------------------- mutations


def paths_of(node, prefix=()) -> list[tuple]:
    """Every key path of a nested mapping (lists by index)."""
    found = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        found.append(prefix + (key,))
        found.extend(paths_of(value, prefix + (key,)))
    return found


def parent_and_key(config: dict, path: tuple):
    node = config
    for part in path[:-1]:
        node = node[part]
    return node, path[-1]


@st.composite
def mutated_config(draw, base: dict) -> dict:
    config = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        paths = paths_of(config)
        if not paths:
            break
        node, key = parent_and_key(config, draw(st.sampled_from(paths)))
        action = draw(st.sampled_from(["drop", "value", "typo", "extra"]))
        if action == "drop" and isinstance(node, dict):
            node.pop(key)
        elif action == "value":
            node[key] = draw(st.sampled_from(ODD_VALUES) | st.integers(-5, 10**6) | st.text(max_size=12))
        elif action == "typo" and isinstance(node, dict):
            node[draw(st.sampled_from(KEY_TYPOS))] = node.pop(key)
        elif action == "extra" and isinstance(node, dict):
            node[draw(st.sampled_from(KEY_TYPOS))] = draw(st.sampled_from(ODD_VALUES))
    return config


def damaged_text(draw, text: str) -> bytes:
    """YAML text with a line dropped, duplicated or cut, a stray character, or a Latin-1 byte."""
    lines = text.splitlines(keepends=True)
    index = draw(st.integers(0, len(lines) - 1))
    action = draw(st.sampled_from(["drop", "duplicate", "cut", "char", "latin1"]))
    if action == "drop":
        del lines[index]
    elif action == "duplicate":
        lines.insert(index, lines[index])
    elif action == "cut":
        lines[index] = lines[index][: draw(st.integers(0, len(lines[index])))]
    elif action == "char":
        lines[index] = draw(st.sampled_from([":", "{", "[", "\t", "'", "- ", "&a ", "*a "])) + lines[index]
    data = "".join(lines).encode("utf-8")
    return data + b"# caf\xe9\n" if action == "latin1" else data


def intact_files() -> dict[str, bytes]:
    return {"train.jsonl": jsonl(ROWS), "dev.csv": csv_text(ROWS), "test.jsonl": jsonl(ROWS[1:5])}


@st.composite
def damaged_files(draw) -> dict[str, bytes]:
    """train.jsonl / dev.csv / test.jsonl with one of them damaged."""
    rows = [dict(r) for r in ROWS]
    files = intact_files()
    name = draw(st.sampled_from(sorted(files)))
    action = draw(st.sampled_from(["field", "label", "text_type", "cut", "latin1", "empty", "quote"]))
    damaged = [dict(r) for r in rows]
    row = damaged[draw(st.integers(0, len(damaged) - 1))]
    if action == "field":
        row.pop(draw(st.sampled_from(["text", "label"])))
    elif action == "label":
        row["label"] = draw(st.sampled_from(["neutral", "", 7, None, "Positive"]))
    elif action == "text_type":
        row["text"] = draw(st.sampled_from([None, 3, ["a"], {"b": 1}, ""]))
    body = csv_text(damaged) if name.endswith(".csv") else jsonl(damaged)
    if action == "cut":
        body = body[: draw(st.integers(0, len(body)))]
    elif action == "latin1":
        body = body.replace(b"great", b"gr\xe9at", 1)
    elif action == "empty":
        body = b""
    elif action == "quote":
        body = body.replace(b"\n", b'\n"', 1)
    files[name] = body
    return files


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")


def csv_text(rows: list[dict]) -> bytes:
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["text", "label"], extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: v for k, v in row.items() if k in ("text", "label")})
    return out.getvalue().encode("utf-8")


# --------------------------------------------------------------------------- the property


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def run_case(capsys, calls: list, experiment: bytes, files: dict[str, bytes]) -> str:
    root = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        for name, body in files.items():
            (root / name).write_bytes(body)
        (root / "experiment.yaml").write_bytes(experiment)
        earlier = root / "runs" / "earlier"
        earlier.mkdir(parents=True)
        (earlier / "metrics.json").write_text('{"test": {"accuracy": 0.5}}')
        before = snapshot(root)
        capsys.readouterr()
        del calls[:]
        code = main(["run", str(root / "experiment.yaml"), "--out", str(root / "runs" / "new")])
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        assert code in (0, 2), (code, err)
        if code == 2:
            assert err.startswith("error: ") and not calls, err
        else:
            assert calls == [root / "runs" / "new"], err  # success means the checks passed and training began
        assert snapshot(root) == before  # nothing half-written, the earlier run untouched
        return f"exit {code} " + (err.replace(str(root), "").splitlines() or [""])[-1][:100]
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("base", ["head", "prompt"])
def test_the_unmutated_experiments_reach_training(bases, reached_training, capsys, base):
    """Without this, a fuzz run whose every case failed its checks would prove nothing."""
    experiment = yaml.safe_dump(bases[base], sort_keys=False).encode("utf-8")
    run_case(capsys, reached_training, experiment, intact_files())
    assert len(reached_training) == 1


@FUZZ
@given(data=st.data())
def test_mutated_experiment_files_exit_2_or_succeed(bases, reached_training, capsys, data):
    base = bases[data.draw(st.sampled_from(sorted(bases)))]
    config = data.draw(mutated_config(base))
    text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    experiment = damaged_text(data.draw, text) if data.draw(st.booleans()) else text.encode("utf-8")
    # `pytest --hypothesis-show-statistics` shows the mix of outcomes
    event(run_case(capsys, reached_training, experiment, intact_files()))


@FUZZ
@given(data=st.data())
def test_damaged_data_files_exit_2_or_succeed(bases, reached_training, capsys, data):
    base = bases[data.draw(st.sampled_from(sorted(bases)))]
    experiment = yaml.safe_dump(base, sort_keys=False).encode("utf-8")
    event(run_case(capsys, reached_training, experiment, data.draw(damaged_files())))
