"""The CLI end to end on tiny models: run → run dir, evaluate reproduces, predict; user errors exit 2."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cpu_only_env, experiment_yaml, write_jsonl
from tunelab.cli import main

RUN_FILES = ("config.yaml", "metrics.json", "costs.json", "predictions.jsonl", "logs.csv")


@pytest.fixture
def finished_run(tmp_path, tiny_bert_dir, tiny_sentiment):
    exp = experiment_yaml(tmp_path / "exp.yaml", tiny_bert_dir, tiny_sentiment, {"name": "bitfit"})
    run_dir = tmp_path / "run"
    assert main(["run", str(exp), "--out", str(run_dir)]) == 0
    return run_dir, tiny_sentiment


def test_run_writes_a_complete_run_dir(finished_run):
    run_dir, _ = finished_run
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    costs = json.loads((run_dir / "costs.json").read_text())
    assert 0 < costs["trainable_params"] < costs["total_params"]
    assert 0 < costs["trainable_percent"] < 100
    for key in ("train_seconds", "peak_memory_mb", "train_tokens_per_second", "eval_examples_per_second"):
        assert costs[key] > 0, key
    assert len((run_dir / "predictions.jsonl").read_text().splitlines()) == 4
    assert not list(run_dir.parent.glob(".*partial"))


def test_evaluate_reproduces_the_test_metric(finished_run, capsys):
    run_dir, data = finished_run
    stored = json.loads((run_dir / "metrics.json").read_text())["test"]
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--data", data["test"]]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["metrics"] == pytest.approx(stored, abs=1e-9)


@pytest.mark.parametrize("option", ["--data", "--input"])  # --input: the old name, a hidden deprecated alias
def test_predict_reads_plain_lines_and_json(finished_run, tmp_path, capsys, option):
    run_dir, _ = finished_run
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"text": "good great"}\nplain text line\n')
    capsys.readouterr()
    assert main(["predict", str(run_dir), option, str(inputs)]) == 0
    out = capsys.readouterr()
    assert ("--input is deprecated; use --data" in out.err) == (option == "--input")
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert [r["text"] for r in rows] == ["good great", "plain text line"]
    assert all(r["prediction"] in ("negative", "positive") and set(r["scores"]) == {"negative", "positive"} for r in rows)


def test_existing_run_dir_is_left_intact(finished_run, capsys):
    run_dir, _ = finished_run
    before = (run_dir / "metrics.json").read_text()
    exp = run_dir / "config.yaml"
    assert main(["run", str(exp), "--out", str(run_dir)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (run_dir / "metrics.json").read_text() == before


def test_lists(capsys):
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    for name in ("head", "full", "partial", "bitfit"):
        assert f"\n{name} " in "\n" + out
    assert main(["models"]) == 0
    assert "smollm2-135m" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["misspelled_key", "missing_data", "label_outside", "unreachable_hub"])
def test_user_errors_exit_2_without_traceback_or_run_dir(case, tmp_path, tiny_bert_dir, tiny_sentiment, capsys):
    data = dict(tiny_sentiment)
    extra, overrides = {}, []
    if case == "missing_data":
        data["train"] = str(tmp_path / "missing.jsonl")
    if case == "label_outside":
        data["test"] = str(write_jsonl(tmp_path / "bad.jsonl", [{"text": "x", "label": "neutral"}]))
    if case == "misspelled_key":
        overrides = ["train.learnig_rate=0.1"]
    model = "nobody/no-such-model" if case == "unreachable_hub" else tiny_bert_dir
    exp = experiment_yaml(tmp_path / "exp.yaml", model, data, {"name": "head"}, **extra)
    out_dir = tmp_path / "runs" / "x"
    assert main(["run", str(exp), *overrides, "--out", str(out_dir)]) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr and stderr.startswith("error: ")
    expected = {"misspelled_key": "did you mean 'train.learning_rate'", "missing_data": "not found",
                "label_outside": "bad.jsonl:1: label 'neutral'", "unreachable_hub": "minilm-l6"}[case]
    assert expected in stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_console_script_exits_2_without_traceback(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: x\ntrain:\n  learnig_rate: 0.1\n")
    result = subprocess.run([sys.executable, "-m", "tunelab.cli", "run", str(exp)], capture_output=True, text=True,
                            timeout=120, env=cpu_only_env())
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert "exp.yaml, line 3: unknown key 'train.learnig_rate'" in result.stderr


def test_predict_on_a_pair_run_needs_both_texts_and_prints_both(tmp_path, tiny_bert_dir, capsys):
    rows = [{"text": f"the film {i}", "text_pair": hyp, "label": label} for i in range(4)
            for hyp, label in (("good great", "positive"), ("bad awful", "negative"))]
    data = {split: str(write_jsonl(tmp_path / f"{split}.jsonl", rows)) for split in ("train", "dev", "test")}
    exp = experiment_yaml(tmp_path / "exp.yaml", tiny_bert_dir, data, {"name": "bitfit"},
                          task={"type": "pair_classification"})
    assert main(["run", str(exp), "--out", str(tmp_path / "run")]) == 0
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"text": "the film", "text_pair": "good great"}\n')
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run"), "--data", str(inputs)]) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (row["text"], row["text_pair"]) == ("the film", "good great") and row["prediction"] in ("negative", "positive")
    # a line without its second text would be scored on the first alone: refused, before the weights load
    for line, expected in (('{"text": "the film"}', "reads the second text from 'text_pair', which this line lacks"),
                           ("the film good great", "give each as a JSON line with 'text' and 'text_pair'")):
        inputs.write_text(line + "\n")
        assert main(["predict", str(tmp_path / "run"), "--data", str(inputs)]) == 2
        assert f"{inputs}:1: this run classifies sentence pairs" in capsys.readouterr().err


def test_a_lora_run_and_its_predict_show_no_library_deprecation_warning(tmp_path, tiny_bert_dir, tiny_sentiment, capsys):
    import warnings

    exp = experiment_yaml(tmp_path / "exp.yaml", tiny_bert_dir, tiny_sentiment, {"name": "lora"})
    inputs = tmp_path / "in.txt"
    inputs.write_text("good great\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # what a fresh process shows once
        assert main(["run", str(exp), "--out", str(tmp_path / "run")]) == 0
        assert main(["predict", str(tmp_path / "run"), "--data", str(inputs)]) == 0
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
