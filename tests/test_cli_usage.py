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
