"""CLI usage errors under whichever typer the range allows: one line, exit 2, no traceback, hint kept."""

import subprocess
import sys

import pytest

from conftest import cpu_only_env
from tunelab import __version__
from tunelab.cli import main

USAGE_ERRORS = {
    "misspelled command": (["stratgies"], "No such command 'stratgies'. Did you mean 'strategies'?"),
    "missing argument": (["run"], "Missing argument 'experiment'"),
    "unknown option": (["compare", "exp.yaml", "--bogus"], "No such option: --bogus"),
    "option without value": (["run", "exp.yaml", "--out"], "Option '--out' requires an argument"),
    "bad option value": (["prompt", "exp.yaml", "--n", "zero"], "Invalid value for '--n'"),
}


@pytest.mark.parametrize("case", USAGE_ERRORS)
def test_usage_errors_are_one_line_and_exit_2(case, capsys):
    argv, expected = USAGE_ERRORS[case]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and err.startswith("error: ") and err.count("\n") == 1
    assert "--help" in err  # says where to look


def test_version_prints_the_package_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"tunelab {__version__}"


@pytest.mark.parametrize("argv", [[], ["stratgies"]], ids=["bare", "misspelled"])
def test_console_script_usage_errors_exit_2_without_traceback(argv):
    """Through the real entry point, as a user types it (typer's own exception types included)."""
    result = subprocess.run([sys.executable, "-m", "tunelab.cli", *argv], capture_output=True, text=True,
                            timeout=120, env=cpu_only_env())
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    if not argv:  # bare `tunelab` shows the help
        assert "Usage: tunelab" in result.stdout + result.stderr and "compare" in result.stdout + result.stderr


def command_paths() -> list[list[str]]:
    """Every command and subcommand, as typed (`data check` included), read from the app itself."""
    import typer.main

    from tunelab.cli import app

    paths, group = [], typer.main.get_command(app)

    def walk(command, prefix):
        for name, sub in getattr(command, "commands", {}).items():
            if getattr(sub, "commands", None):
                walk(sub, prefix + [name])
            else:
                paths.append(prefix + [name])

    walk(group, [])
    return paths


def test_every_command_is_listed():
    paths = command_paths()
    assert ["init"] in paths and ["data", "check"] in paths and ["compare"] in paths and len(paths) >= 11


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_every_command_help_shows_an_example(path, capsys):
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    text = " ".join(out.split())  # rich may wrap the epilog
    assert "Example: " in text and "tunelab " + " ".join(path) in text[text.index("Example: "):]


def test_predict_and_evaluate_share_the_data_option_and_input_is_hidden(capsys):
    assert main(["predict", "--help"]) == 0
    predict_help = capsys.readouterr().out
    assert "--data" in predict_help and "--input" not in predict_help
    assert main(["evaluate", "--help"]) == 0
    assert "--data" in capsys.readouterr().out


def test_predict_refuses_both_names_of_the_data_option(tmp_path, capsys):
    assert main(["predict", str(tmp_path), "--data", "a.jsonl", "--input", "b.jsonl"]) == 2
    assert "pass only --data" in capsys.readouterr().err


def sentiment_sweep(tmp_path, name: str, strategies: list, distinct_texts: int = 8):
    """A two-seed sweep file on MiniLM over 16 sentences (each text twice when distinct_texts is 4)."""
    import json

    import yaml

    rows = [{"text": f"{word} film number {i % distinct_texts}", "label": label} for i in range(8)
            for word, label in (("great", "positive"), ("awful", "negative"))]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({
        "name": name, "model": {"name": "minilm-l6", "max_length": 32}, "output_dir": str(tmp_path / "runs"),
        "data": {"train": "train.jsonl", "test": "train.jsonl", "k_shot": 2},
        "train": {"log_to": ["csv"]}, "sweep": {"seeds": [1, 2], "strategies": strategies}}))
    return exp


def test_dry_run_estimates_time_from_finished_cells(tmp_path, capsys):
    import json

    exp = sentiment_sweep(tmp_path, "est", ["head", "bitfit"])
    assert main(["compare", str(exp), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 cells: 0 finished, 4 to run; no estimate yet" in out
    from tunelab.config import load_experiment
    from tunelab.sweep.runner import checked_plan

    done = tmp_path / "runs" / "est" / "head-k2-seed1"  # a finished cell, as the runner leaves one
    done.mkdir(parents=True)
    meta = next(cell.meta() for cell in checked_plan(load_experiment(exp))[1] if cell.id == done.name)
    for name, content in (("metrics.json", {"test": {}}), ("cell.json", meta),
                          ("costs.json", {"train_seconds": 100.0, "eval_seconds": 20.0})):
        (done / name).write_text(json.dumps(content))
    assert main(["compare", str(exp), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "finished  head-k2-seed1" in out
    # head seed 2 takes head's mean (120 s); bitfit, with no finished cell, is named instead of guessed
    assert "4 cells: 1 finished, 3 to run; estimated time for 1 of them: about 2 min 00 s" in out
    assert "no estimate for bitfit (2 cells): none of that entry's cells has finished yet" in out
    # the dry run makes the sweep's own checks: a changed setting would make it refuse to resume the finished cell
    assert main(["compare", str(exp), "--dry-run", "train.learning_rate=0.5"]) == 2
    assert "head-k2-seed1: " in capsys.readouterr().err
    # two cells at once: head seed 2 is the only cell with an estimate and it still takes its 120 s
    assert main(["compare", str(exp), "--dry-run", "sweep.workers=2"]) == 0
    assert "about 2 min 00 s (mean training + evaluation time of the finished cells of the same strategy entry, " \
           "laid out 2 cells at once as the sweep starts them" in capsys.readouterr().out


def test_a_command_says_each_warning_once(tmp_path):
    """The sweep's checks read the data once per seed and per strategy set-up; the terminal shows its
    duplicate-text warning once (it showed three times: Python's memory of shown warnings is reset whenever a
    library touches the warning filters)."""
    # setfit's set-up imports scipy, which touches the warning filters before head's set-up reads the data again
    exp = sentiment_sweep(tmp_path, "once", ["setfit", "head"], distinct_texts=4)
    result = subprocess.run([sys.executable, "-m", "tunelab.cli", "compare", str(exp), "--dry-run"],
                            capture_output=True, text=True, timeout=300, env=cpu_only_env())
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("warning: train split has 8 duplicate text(s)") == 1
