"""Bad inputs around runs give one `error:` line and exit 2: where results go, damaged run directories,
input that is not UTF-8, templates that fail when rendered. Nothing new is left behind, and checks
that need no weights fail before any weights load."""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import pytest

import tunelab.models
from conftest import experiment_yaml, write_jsonl
from tunelab.cli import main

GOOD = ["good fine great", "great nice good", "nice good lovely", "lovely great fine", "fine nice good great"]
BAD = ["bad awful poor", "poor terrible bad", "awful bad dull", "dull poor awful", "terrible awful poor bad"]


def sentiment_files(directory: Path) -> dict:
    rows = [{"text": t, "label": "positive"} for t in GOOD] + [{"text": t, "label": "negative"} for t in BAD]
    return {"train": str(write_jsonl(directory / "train.jsonl", rows)),
            "test": str(write_jsonl(directory / "test.jsonl", rows[3:5] + rows[8:]))}


def snapshot(directory: Path) -> set[Path]:
    return set(Path(directory).rglob("*"))


def line_of(path: Path, key: str) -> int:
    return next(n for n, text in enumerate(path.read_text().splitlines(), start=1) if text.strip().startswith(key))


def error_of(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err, err
    return err


@pytest.fixture
def no_weights_load(monkeypatch):
    """Any model-weights load (every strategy goes through tunelab.models.load_model) fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("model weights were loaded before the bad input was reported")

    monkeypatch.setattr(tunelab.models, "auto_class_for", refuse)


@pytest.fixture(scope="module")
def bitfit_run(tmp_path_factory, tiny_bert_dir) -> Path:
    """A finished run; tests damage a copy of it."""
    directory = tmp_path_factory.mktemp("bitfit")
    exp = experiment_yaml(directory / "exp.yaml", tiny_bert_dir, sentiment_files(directory), {"name": "bitfit"})
    assert main(["run", str(exp), "--out", str(directory / "run")]) == 0
    return directory / "run"


@pytest.fixture
def run_copy(bitfit_run, tmp_path) -> Path:
    return Path(shutil.copytree(bitfit_run, tmp_path / "run"))


# --------------------------------------------------------------------------- 1. --out that cannot be created


def out_cases(tmp_path: Path) -> dict[str, tuple[str, str]]:
    (tmp_path / "somefile.txt").write_text("not a folder\n")
    return {
        "unwritable": ("/proc/x", "/proc is not writable"),
        "under_a_file": (str(tmp_path / "somefile.txt" / "run"), f"a parent, {tmp_path / 'somefile.txt'}, is a file"),
        "existing_file": (str(tmp_path / "somefile.txt"), "is an existing file, not a directory"),
    }


@pytest.mark.parametrize("command", ["run", "compare", "compare --dry-run"])
@pytest.mark.parametrize("case", ["unwritable", "under_a_file", "existing_file"])
def test_out_that_cannot_be_a_directory_is_refused_before_any_work(command, case, tmp_path, tiny_bert_dir, capsys, monkeypatch):
    import tunelab.run
    import tunelab.sweep

    def too_late(*args, **kwargs):
        raise AssertionError("the --out check came after the work started")

    monkeypatch.setattr(tunelab.run, "prepare", too_late)
    monkeypatch.setattr(tunelab.sweep, "run_sweep", too_late)
    monkeypatch.setattr(tunelab.sweep, "plan_sweep", too_late)
    out, reason = out_cases(tmp_path)[case]
    exp = experiment_yaml(tmp_path / "exp.yaml", tiny_bert_dir, sentiment_files(tmp_path), {"name": "head"},
                          sweep={"isolation": "none", "strategies": ["head"]})
    before = snapshot(tmp_path)
    assert main([*command.split()[:1], str(exp), *command.split()[1:], "--out", out]) == 2
    err = error_of(capsys)
    assert f"--out {out}" in err and reason in err and "choose another --out" in err
    assert snapshot(tmp_path) == before and not Path("/proc/x").exists()


def test_output_dir_from_the_file_is_named_by_its_line(tmp_path, tiny_bert_dir, capsys):
    (tmp_path / "somefile.txt").write_text("x")
    exp = experiment_yaml(tmp_path / "exp.yaml", tiny_bert_dir, sentiment_files(tmp_path), {"name": "head"},
                          output_dir=str(tmp_path / "somefile.txt"))
    line = line_of(exp, "output_dir:")
    assert main(["run", str(exp)]) == 2
    err = error_of(capsys)
    assert f"exp.yaml, line {line}: output_dir" in err and "is a file" in err and "set output_dir" in err


# --------------------------------------------------------------------------- 2. damaged run directories


@pytest.fixture
def predict_input(tmp_path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text("good great\n")
    return path


def evaluate_or_predict(command: str, run_dir: Path, predict_input: Path) -> list[str]:
    if command == "evaluate":
        return ["evaluate", str(run_dir), "--data", str(predict_input.parent / "test.jsonl")]
    return ["predict", str(run_dir), "--data", str(predict_input)]


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_config_yaml_that_is_not_yaml_names_file_and_line(command, run_copy, predict_input, capsys, no_weights_load):
    sentiment_files(predict_input.parent)
    config = run_copy / "config.yaml"
    config.write_text(config.read_text() + "strategy: [unclosed\nmore: x\n")
    assert main(evaluate_or_predict(command, run_copy, predict_input)) == 2
    err = error_of(capsys)
    assert f"{config}, line " in err and "not valid YAML" in err and f"the run directory {run_copy} is damaged" in err


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_deleted_weights_name_the_file_and_how_to_get_them(command, run_copy, predict_input, capsys, no_weights_load):
    sentiment_files(predict_input.parent)
    (run_copy / "delta.safetensors").unlink()
    assert main(evaluate_or_predict(command, run_copy, predict_input)) == 2
    err = error_of(capsys)
    assert str(run_copy) in err and "delta.safetensors is missing" in err
    assert "save_artifacts: false" in err and f"tunelab run {run_copy / 'config.yaml'} --out NEW_DIR" in err


def test_results_only_sweep_cell_says_it_kept_no_weights(tmp_path, tiny_bert_dir, predict_input, capsys):
    exp = experiment_yaml(tmp_path / "exp.yaml", tiny_bert_dir, sentiment_files(tmp_path), {"name": "head"},
                          train={"epochs": 1, "eval_strategy": "no"},
                          sweep={"isolation": "none", "strategies": ["head"], "save_artifacts": False})
    assert main(["compare", str(exp), "--out", str(tmp_path / "sweep")]) == 0
    cell = tmp_path / "sweep" / "head-kall-seed42"
    capsys.readouterr()
    for command in ("evaluate", "predict"):
        assert main(evaluate_or_predict(command, cell, predict_input)) == 2
        err = error_of(capsys)
        assert f"{cell} kept no weights" in err and "sweep.save_artifacts: false" in err and "re-run with artifacts" in err


# --------------------------------------------------------------------------- 3. predict input


def test_predict_file_with_bytes_that_are_not_utf8_names_the_line(run_copy, tmp_path, capsys, no_weights_load):
    path = tmp_path / "in.txt"
    path.write_bytes(b"good great\ncaf\xe9 ok\n")
    assert main(["predict", str(run_copy), "--data", str(path)]) == 2
    err = error_of(capsys)
    assert f"{path}:2: text is not valid UTF-8" in err and "re-save the file as UTF-8" in err


def test_predict_stdin_with_bytes_that_are_not_utf8_names_the_line(run_copy, capsys, monkeypatch, no_weights_load):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"good great\n\nbad \xff\xfe awful\n")))
    assert main(["predict", str(run_copy), "--data", "-"]) == 2
    err = error_of(capsys)
    assert "standard input, line 3: text is not valid UTF-8" in err and "re-encode the input as UTF-8" in err


def test_predict_stdin_keeps_unicode_line_separators_inside_a_line(run_copy, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("good\u2028great\n{\"text\": \"bad\"}\n".encode())))
    assert main(["predict", str(run_copy)]) == 0
    out = capsys.readouterr().out  # split at \n only: U+2028 stays raw inside the JSON text
    assert [json.loads(line)["text"] for line in out.strip("\n").split("\n")] == ["good\u2028great", "bad"]


def test_predict_input_that_cannot_be_read(run_copy, tmp_path, capsys, monkeypatch, no_weights_load):
    assert main(["predict", str(run_copy), "--data", str(tmp_path)]) == 2
    assert f"--data {tmp_path} is a directory" in error_of(capsys)

    locked = tmp_path / "locked.txt"
    locked.write_text("good\n")

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)  # root reads any file, so the refusal is simulated
    assert main(["predict", str(run_copy), "--data", str(locked)]) == 2
    err = error_of(capsys)
    assert f"cannot read the input file {locked} (Permission denied)" in err and "permissions" in err


# --------------------------------------------------------------------------- 4. templates that fail to render


@pytest.mark.parametrize("template, problem", [
    ("{{ text + 1 }}", "TypeError: can only concatenate str"),
    ("Review:\n{{ range(1000000)|list|length }}", "the sandbox refused the template: Range too big"),
])
def test_template_that_fails_to_render_is_a_config_error_before_the_model_loads(
        template, problem, tmp_path, tiny_llama_dir, capsys, no_weights_load):
    exp = experiment_yaml(tmp_path / "exp.yaml", tiny_llama_dir, sentiment_files(tmp_path), {"name": "zero_shot"},
                          prompt={"template": template})
    line = line_of(exp, "template:")
    before = snapshot(tmp_path)
    assert main(["run", str(exp), "--out", str(tmp_path / "new" / "deeper" / "run")]) == 2
    err = error_of(capsys)
    assert f"exp.yaml, line {line}: prompt.template" in err and problem in err and "test.jsonl:1" in err
    assert snapshot(tmp_path) == before  # no run directory, no .partial, no empty parents


def test_template_failing_on_one_predict_input_names_that_line(tmp_path, tiny_llama_dir, capsys):
    # integer division by (length - 3): fine on the data, a ZeroDivisionError on a 3-character input
    template = "{{ text }} {{ 10 // (text|length - 3) }}"
    exp = experiment_yaml(tmp_path / "exp.yaml", tiny_llama_dir, sentiment_files(tmp_path), {"name": "zero_shot"},
                          prompt={"template": template})
    assert main(["run", str(exp), "--out", str(tmp_path / "run")]) == 0
    inputs = tmp_path / "in.txt"
    inputs.write_text("good great film\nabc\n")
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run"), "--data", str(inputs)]) == 2
    err = error_of(capsys)
    assert f"{tmp_path / 'run' / 'config.yaml'}: prompt.template on the example at {inputs}:2" in err
    assert "ZeroDivisionError" in err


def test_a_model_whose_weights_file_is_corrupt_is_named_with_exit_2(tmp_path, broken_weights_dir, capsys):
    """An interrupted copy leaves a weights file safetensors cannot read: one error line naming the folder."""
    exp = experiment_yaml(tmp_path / "exp.yaml", broken_weights_dir, sentiment_files(tmp_path), {"name": "head"})
    assert main(["run", str(exp), "--out", str(tmp_path / "run")]) == 2
    assert f"cannot load the model in {broken_weights_dir}" in error_of(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_corrupt_weights_file_in_a_run_directory_is_named_with_exit_2(command, run_copy, predict_input, capsys):
    sentiment_files(predict_input.parent)
    (run_copy / "delta.safetensors").write_bytes(b"not a safetensors file")
    assert main(evaluate_or_predict(command, run_copy, predict_input)) == 2
    err = error_of(capsys)
    assert f"{run_copy} is damaged: delta.safetensors cannot be read" in err
    assert f"tunelab run {run_copy / 'config.yaml'} --out NEW_DIR" in err


@pytest.mark.parametrize("strategy", ["lora", "adapter"])
def test_corrupt_adapter_weights_are_named_with_exit_2(strategy, tmp_path, tiny_bert_dir, predict_input, capsys):
    """PEFT's and tunelab's own adapter files, read by their own loaders, get the same message."""
    exp = experiment_yaml(tmp_path / "exp.yaml", tiny_bert_dir, sentiment_files(tmp_path), {"name": strategy})
    run_dir = tmp_path / "run"
    assert main(["run", str(exp), "--out", str(run_dir)]) == 0
    capsys.readouterr()
    weights = run_dir / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # cut short, as by an interrupted copy
    assert main(["predict", str(run_dir), "--data", str(predict_input)]) == 2
    assert f"{run_dir} is damaged: adapter/adapter_model.safetensors cannot be read" in error_of(capsys)
