"""The `tunelab` command: one small function per subcommand.

User mistakes (bad config, missing files, bad data, unknown models) print one short message and
exit 2, without a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer

from tunelab.errors import UserError
from tunelab.outdir import check_output_dir


class Executor(str, Enum):
    """Where `tunelab compare` runs cells (`--executor`)."""

    local = "local"
    ray = "ray"

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Adapt pretrained language models and measure which strategy wins.")
USER_ERROR = 2


def quiet_libraries() -> None:
    """Keep the terminal for tunelab's own output: library chatter only at warning level or above."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # per-weight loading bars; training keeps its own
    warnings.formatwarning = plain_warning
    warnings.showwarning = once_per_command(warnings.showwarning)
    # PEFT (0.21) reads transformers' deprecated `is_gradient_checkpointing` whenever it wraps a model: a
    # FutureWarning on every LoRA run and predict that names nothing the user can change.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def plain_warning(message, category, filename, lineno, line=None) -> str:
    """tunelab's warnings speak to users (what to change), not to developers: no source file and line."""
    if category is UserWarning and ("tunelab" in Path(filename).parts or filename.startswith("<")):
        return f"warning: {message}\n"
    return WARNING_FORMAT(message, category, filename, lineno, line)


WARNING_FORMAT = warnings.formatwarning


def once_per_command(show):
    """`show` (warnings.showwarning) saying each warning once: a sweep's checks read the same data once per
    seed and per strategy set-up, and Python's own once-per-location memory is reset whenever any library
    touches the warning filters, so the same duplicate-text warning was printed three times."""
    inner = getattr(show, "shows", show)  # a second command in one process (tests) starts a fresh memory
    said: set[tuple[str, type]] = set()

    def show_once(message, category, filename, lineno, file=None, line=None):
        if (str(message), category) in said:
            return
        said.add((str(message), category))
        inner(message, category, filename, lineno, file, line)

    show_once.shows = inner
    return show_once


def show_version(value: bool) -> None:
    if value:
        from tunelab import __version__

        typer.echo(f"tunelab {__version__}")
        raise typer.Exit()


@app.callback()
def common(
    version: bool = typer.Option(False, "--version", callback=show_version, is_eager=True, help="Print tunelab's version and exit."),
):
    """Adapt pretrained language models and measure which strategy wins."""


@app.command(epilog="Example: tunelab run examples/demo_run.yaml train.learning_rate=1e-3 --out runs/my-run")
def run(
    experiment: Path = typer.Argument(..., help="Experiment YAML file."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Dotted overrides, e.g. train.learning_rate=2e-5"),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default: runs/<name>/<strategy>-seed<seed>-<time>)."),
):
    """Train and evaluate one strategy into a run directory."""
    from tunelab.config import load_experiment
    from tunelab.run import default_run_dir, execute, prepare
    from tunelab.distributed import is_main_process, leave_process_group

    config = load_experiment(experiment, overrides or [])
    run_dir = out or default_run_dir(config)
    check_output_dir(run_dir, *output_origin(out, config), may_exist=False)  # before data and weights load
    quiet_libraries()
    prepared = prepare(config)
    result = execute(prepared, run_dir)
    leave_process_group()  # under `accelerate launch`: every rank finished; a no-op in one process
    if is_main_process():
        print_result(config.strategy.name, result, run_dir)


def output_origin(out: Optional[Path], config) -> tuple[str, str]:
    """Where an output directory came from (the option, or output_dir's line in the file) and how to pick another."""
    if out is not None:
        return f"--out {out}", "choose another --out"
    from tunelab.config import location

    where = f"{config.source}{location(config.lines.get(('output_dir',)))}"
    return f"{where}: output_dir {config.output_dir}", "set output_dir to a writable folder or pass --out"


def print_result(strategy: str, result: dict, run_dir: Path) -> None:
    test = ", ".join(f"{k}={v:.4f}" for k, v in result["test"].items() if isinstance(v, float))
    typer.echo(f"{strategy}: test {test} ({result['num_test']} examples, {result['num_train']} train)")
    if "continual" in result:  # after each task (rows), the main metric on each task (columns)
        from tunelab.training.continual_matrix import matrix_table

        summary = result["continual"]
        typer.echo(f"continual learning ({summary['method']}); test averaged over the tasks; accuracy matrix:")
        typer.echo(matrix_table(summary["tasks"], summary["matrix"], summary["metric"][0]))
    if "multitask" in result:  # the mean above is over these tasks
        summary = result["multitask"]
        how = "one shared model" if summary["joint"] else "one model per task"
        typer.echo(f"multi-task ({how}, {summary['sampling']} sampling); test averaged over the tasks:")
        for name, task in result["tasks"].items():
            typer.echo(f"  {name}: " + ", ".join(f"{k}={v:.4f}" for k, v in task["test"].items() if isinstance(v, float))
                       + f" ({task['num_test']} examples, {task['num_train']} train)")
    if result.get("perturbed"):
        typer.echo("perturbed test copy: " + ", ".join(f"{k}={v:.4f}" for k, v in result["perturbed"].items()
                                                       if isinstance(v, float)))
    typer.echo(f"run directory: {run_dir}")


@app.command(epilog="Example: tunelab evaluate runs/my-run --data data/test.jsonl")
def evaluate(
    run_dir: Path = typer.Argument(..., help="A finished run directory."),
    data: str = typer.Option(..., "--data", help="Data file (or hf:NAME[@CONFIG]:SPLIT) with labels."),
):
    """Evaluate a finished run on a data file; prints the metrics as JSON."""
    from tunelab.run import evaluate_run

    quiet_libraries()
    typer.echo(json.dumps(evaluate_run(run_dir, data), indent=2))


@app.command(epilog="Example: echo 'what a lovely little film' | tunelab predict runs/my-run   (or --data new.jsonl)")
def predict(
    run_dir: Path = typer.Argument(..., help="A finished run directory."),
    data: str = typer.Option("-", "--data", help="JSON Lines file of examples, or '-' for stdin (JSON lines or plain text lines)."),
    input: Optional[str] = typer.Option(None, "--input", hidden=True, help="Deprecated name of --data."),
):
    """Label new examples; writes one JSON object per line to stdout."""
    from tunelab.predict import predict_lines

    if input is not None:  # the old name (before evaluate and predict shared --data) keeps working
        if data != "-":
            raise UserError("--input is the old name of --data; pass only --data")
        typer.echo("warning: --input is deprecated; use --data (the same option as `tunelab evaluate`)", err=True)
        data = input
    quiet_libraries()
    lines = read_stdin_lines() if data == "-" else read_input_file(data)
    for row in predict_lines(run_dir, lines, source="standard input" if data == "-" else data):
        typer.echo(json.dumps(row, ensure_ascii=False))


@app.command(epilog="Example: tunelab prompt examples/sst2_zero_shot.yaml strategy.k=2 --n 2; "
                     "tunelab prompt experiment.yaml --entry pet")
def prompt(
    experiment: Path = typer.Argument(..., help="Experiment YAML file of a prompt strategy."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Dotted overrides, e.g. strategy.k=2"),
    n: int = typer.Option(3, "--n", min=1, help="How many test examples to show."),
    entry: Optional[str] = typer.Option(None, "--entry", help="A sweep entry's id (or a cell id): show the prompts "
                                        "its first cell reads, with the entry's own model and settings."),
):
    """Print the first N test prompts exactly as the model reads them (chat template applied)."""
    from tunelab.config import load_experiment
    from tunelab.prompt_preview import preview_config
    from tunelab.run import prepare

    quiet_libraries()
    config = preview_config(load_experiment(experiment, overrides or []), entry)  # checked before weights load
    prepared = prepare(config)
    for block in prepared.strategy.preview(prepared.splits, n):
        typer.echo(block + "\n")


def read_input_file(path: str) -> list[str]:
    """The lines of `--data PATH`; a missing, unreadable or non-UTF-8 file is a one-line error."""
    from tunelab.errors import DataError

    file = Path(path)
    if file.is_dir():
        raise DataError(f"--data {path} is a directory; pass a file of examples (JSON lines or text lines) or '-' for stdin")
    if not file.exists():
        raise DataError(f"input file not found: {path} (--data); check the path")
    try:
        data = file.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read the input file {path} ({err.strerror or err}); check its permissions "
                        f"or pass another --data") from None
    return input_lines(data, path, "re-save the file as UTF-8")


def read_stdin_lines() -> list[str]:
    """Standard input read as bytes, so text that is not UTF-8 can name its line (text mode would just fail)."""
    stream = getattr(sys.stdin, "buffer", None)
    data = stream.read() if stream is not None else sys.stdin.read().encode("utf-8")
    return input_lines(data, "standard input", "re-encode the input as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)")


def input_lines(data: bytes, source: str, fix: str) -> list[str]:
    from tunelab.data.loaders import decode_utf8, physical_lines

    return physical_lines(decode_utf8(data, source, fix).removeprefix("\ufeff"))  # a BOM is no part of line 1


@app.command(epilog="Example: tunelab models")
def models():
    """List the embedded models that work offline."""
    from tunelab.models import EMBEDDED

    for model in EMBEDDED.values():
        typer.echo(f"{model.name:14} {model.description}")
    typer.echo("Also accepted: a local model directory, or a Hugging Face hub id (needs network).")


@app.command(epilog="Example: tunelab export runs/my-lora-run --out merged-model")
def export(
    run_dir: Path = typer.Argument(..., help="A finished lora or ia3 run directory."),
    out: Path = typer.Option(..., "--out", help="New directory for the merged model."),
):
    """Merge a run's LoRA/IA3 delta into the base weights: a plain model directory (+ tokenizer)."""
    from tunelab.export import export_merged

    quiet_libraries()
    typer.echo(f"merged model written to {export_merged(run_dir, out)}")


@app.command(epilog="Example: tunelab strategies")
def strategies():
    """List the registered strategies, then the model changes and the read-outs each pairs with."""
    from tunelab.methods import all_strategies
    from tunelab.model_changes import all_model_changes
    from tunelab.readouts import all_readouts

    for info in all_strategies():
        typer.echo(f"{info.name:16} {'[' + info.family + ']':22} {info.description}")
    typer.echo("\nModel changes (strategy.train of classifier / pet / sft, settings under strategy.delta), with the\n"
               "read-outs they pair with: head = a classification head (classifier and the head strategies),\n"
               "lm = the LM's own head (pet: template + verbalizer; sft: generation):")
    for change in all_model_changes():
        typer.echo(f"  {change.name:14} {'[' + ', '.join(change.readouts) + ']':22} {change.description}")
    typer.echo("\nRead-outs (how the label is read), with the pairing key model changes pair with and the model each needs:")
    for readout in all_readouts():
        typer.echo(f"  {readout.name:14} {'[' + readout.pairing + ']':22} {readout.description}")
        typer.echo(f"  {'':14} {'':22} needs {readout.needs}; used by {readout.used_by}")


@app.command(epilog="Example: tunelab compare examples/demo.yaml --dry-run   (then without --dry-run: runs/demo/report.html)")
def compare(
    experiment: Path = typer.Argument(..., help="Experiment YAML file with a `sweep:` section."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Dotted overrides, e.g. train.epochs=3"),
    out: Optional[Path] = typer.Option(None, "--out", help="Sweep directory (default: <output_dir>/<name>)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the cells (and which are finished) without running."),
    executor: Optional[Executor] = typer.Option(
        None, "--executor", help="Where cells run: on this machine, sweep.workers at once (local), "
                                 "or as Ray tasks (ray); default: the file's sweep.executor."),
):
    """Run every strategy × K × seed × prompt variant of a sweep (resumable), then write the report."""
    from tunelab.config import load_experiment
    from tunelab.sweep import run_sweep, sweep_root

    quiet_libraries()
    config = load_experiment(experiment, overrides or [])
    if executor and isinstance(config.sweep, dict):
        config.sweep["executor"] = executor.value
        config.lines[("sweep", "executor")] = f"command-line option '--executor {executor.value}'"
    # before any cell, and in a dry run too: the plan should not promise a sweep that cannot be written
    check_output_dir(sweep_root(config, out), *output_origin(out, config), may_exist=True)
    if dry_run:
        show_plan(config, sweep_root(config, out))
        return
    try:
        outcome = run_sweep(config, out)
    except KeyboardInterrupt:  # Ctrl-C or `kill`: say what is kept and how to go on
        typer.echo(interrupted_sweep_line(config, sweep_root(config, out)), err=True)
        raise typer.Exit(130) from None
    show_report(outcome.root)
    if outcome.failed:
        typer.echo(f"{len(outcome.failed)} cell(s) failed (see the report's Failures section); "
                   f"running the same command again retries them.", err=True)


def show_plan(config, root: Path) -> None:
    """`compare --dry-run`: every cell, finished or to run, and when the rest would end — after the checks the sweep
    itself makes before its first cell (data, models' configs, every strategy set-up; no weights), so a file the
    dry run lists is one the sweep starts on."""
    from tunelab.sweep.estimate import estimate_line
    from tunelab.sweep.runner import checked_plan, unfinished

    sweep, cells, _ = checked_plan(config, root)
    todo = unfinished(root, cells)
    to_run = {cell.id for cell in todo}
    for cell in cells:
        typer.echo(f"{'to run  ' if cell.id in to_run else 'finished'}  {cell.id}")
    at_once = sweep.workers if sweep.executor == "local" else 1
    typer.echo(estimate_line(root, [c for c in cells if c.id not in to_run], todo, at_once))


@app.command(epilog="Example: tunelab report runs/demo")
def report(runs_dir: Path = typer.Argument(..., help="A sweep directory (runs/<name>) or a folder of them.")):
    """Rebuild the report (HTML, Markdown, CSV, plots) from stored results; no model is loaded."""
    from tunelab.report import find_sweeps

    for root in find_sweeps(runs_dir):
        show_report(root)


@app.command()
def board(
    runs_dir: Path = typer.Argument(..., help="A sweep directory (runs/<name>), finished or still running."),
    port: int = typer.Option(8765, "--port", help="Port to listen on (0: any free port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; the default is this machine only."),
):
    """Serve a sweep on localhost: leaderboard and plots that refresh as cells finish, each cell's log
    and learning curves, and a playground for the saved runs. Reads the sweep; writes nothing there.

    Example: tunelab board runs/demo --port 8765   (then open http://127.0.0.1:8765/)
    """
    from tunelab.board.app import serve

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # transformers loads only for the playground
    serve(runs_dir, host=host, port=port)


def interrupted_sweep_line(config, root: Path) -> str:
    from tunelab.sweep import plan_sweep
    from tunelab.sweep.runner import unfinished

    cells = plan_sweep(config)[1]
    finished = len(cells) - len(unfinished(root, cells))
    if not finished:
        return f"stopped: no cell of {len(cells)} has finished in {root}; the same command starts the sweep again"
    return (f"stopped: {finished} of {len(cells)} cells finished in {root} and are kept; the same command "
            f"resumes the other {len(cells) - finished} (`tunelab report {root}`: a report of those finished)")


def show_report(root: Path) -> None:
    from rich.console import Console

    from tunelab.report import build_report, terminal_table
    from tunelab.report.build import terminal_recommendation

    built = build_report(root)
    typer.echo(terminal_recommendation(built))  # first: the answer, then the table behind it
    Console().print(terminal_table(built))
    typer.echo(f"report: {built.html}\nmarkdown: {built.markdown}\nleaderboard: {built.csv}")


PAIR_HELP = ("Sentence pairs: the field that holds the second text (default: detected from conventional pairs such as "
             "text/text_pair, sentence1/sentence2, premise/hypothesis, question/sentence).")


@app.command(epilog="Example: tunelab init data/train.jsonl --test data/test.jsonl --out my-exp.yaml && tunelab compare my-exp.yaml")
def init(
    data: str = typer.Argument(..., help="Training data: .jsonl, .json, .csv or .tsv with a text and a label per record."),
    test: Optional[str] = typer.Option(None, "--test", help="Test data in the same layout (default: DATA itself)."),
    out: Path = typer.Option(Path("experiment.yaml"), "--out", help="The experiment file to write."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
    text_field: Optional[str] = typer.Option(None, "--text-field", help="The field that holds the text (default: detected)."),
    label_field: Optional[str] = typer.Option(None, "--label-field", help="The field that holds the label (default: detected)."),
    text_pair_field: Optional[str] = typer.Option(None, "--text-pair-field", help=PAIR_HELP),
):
    """Write a ready experiment file for your own data: classification, sentence pairs, named entities, extractive QA or
    text to generate."""
    from tunelab.init_experiment import init_experiment

    quiet_libraries()  # the data's warnings (duplicates) as one plain line each
    written = init_experiment(data, test, out, force=force, text_field=text_field, label_field=label_field,
                              text_pair_field=text_pair_field)
    for note in written.notes:
        typer.echo(note)
    typer.echo(f"wrote {written.path} ({written.cells} cells); run: tunelab compare {written.path}")


data_app = typer.Typer(no_args_is_help=True, help="Inspect data files before an experiment uses them.",
                       epilog="Example: tunelab data check data/train.jsonl --test data/test.jsonl")
app.add_typer(data_app, name="data")


@data_app.command("check", epilog="Example: tunelab data check data/train.jsonl --test data/test.jsonl")
def data_check(
    data: str = typer.Argument(..., help="Training data (.jsonl, .json, .csv or .tsv)."),
    test: Optional[str] = typer.Option(None, "--test", help="Test data, checked against the training labels."),
    text_field: Optional[str] = typer.Option(None, "--text-field", help="The field that holds the text (default: detected)."),
    label_field: Optional[str] = typer.Option(None, "--label-field", help="The field that holds the label (default: detected)."),
    text_pair_field: Optional[str] = typer.Option(None, "--text-pair-field", help=PAIR_HELP),
):
    """Counts, label balance, token lengths, duplicates and problems with their lines; exit 2 when unusable."""
    from tunelab.data.check import check_data, format_check

    quiet_libraries()
    report = check_data(data, test, text_field, label_field, text_pair_field=text_pair_field)
    typer.echo(format_check(report))
    if not report.usable:
        raise typer.Exit(USER_ERROR)


def usage_error_types() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """The click exception classes typer may raise: click's own, and (typer >= 0.29) its vendored copy.

    typer 0.29 ships click as `typer._click`, whose exceptions are not subclasses of click's, so
    catching `click.exceptions.UsageError` alone lets every usage error escape as a traceback.
    """
    import importlib

    found = []
    for module in ("click.exceptions", "typer._click.exceptions"):
        try:
            found.append(importlib.import_module(module))
        except ImportError:
            continue
    return (tuple(m.UsageError for m in found),
            tuple(m.Abort for m in found if hasattr(m, "Abort")))


def main(argv: list[str] | None = None) -> int:
    usage_errors, aborts = usage_error_types()
    try:
        code = app(args=argv, standalone_mode=False, prog_name="tunelab")
        if code == 130:  # typer turns Ctrl-C (and `kill`, in compare) into a returned exit code 130
            typer.echo("interrupted", err=True)
            return 130
        if isinstance(code, int) and code:  # a command's own `typer.Exit(code)`, e.g. `data check` on unusable data
            return code
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        return USER_ERROR
    except usage_errors as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # bare `tunelab`: the help is the answer
            help_text = err.format_message()  # typer >= 0.29 has printed the help already; click's carries it
            if help_text.strip():
                typer.echo(help_text, err=True)
        else:
            typer.echo(usage_message(err), err=True)
        return USER_ERROR
    except aborts + (typer.Abort,):
        typer.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    return 0


def usage_message(err) -> str:
    """One line for a CLI usage error (typer's own message, its "did you mean" hint included) and where to look."""
    command = err.ctx.command_path if getattr(err, "ctx", None) is not None else "tunelab"
    return f"error: {err.format_message()} (see `{command} --help`)"


if __name__ == "__main__":
    sys.exit(main())
