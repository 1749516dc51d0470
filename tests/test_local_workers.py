"""`sweep.workers`: several cells at once on this machine, each in its own process with a share of the cores."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from test_sweep import sweep_yaml
from tunelab.config import load_experiment
from tunelab.errors import ConfigError
from tunelab.sweep import plan_sweep, run_sweep
from tunelab.sweep.cell import is_finished
from tunelab.sweep.local_executor import run_locally


class RecordingDisplay:
    """What the sweep display is told, in order: ("start" | "end", cell id)."""

    def __init__(self):
        self.events = []

    def start(self, cell_id):
        self.events.append(("start", cell_id))


def run_recorded(path, root, workers: int):
    config = load_experiment(path, [f"sweep.workers={workers}"])
    _, cells = plan_sweep(config)
    display = RecordingDisplay()
    for cell, ok in run_locally(cells, root, config.source, display, "process", workers):
        display.events.append(("end", cell.id))
        assert ok, (root / f"{cell.id}.failed.json").read_text() if not ok else ""
    return display.events


@pytest.fixture
def member_and_ensemble_sweep(tmp_path, tiny_bert_dir, tiny_sentiment):
    return sweep_yaml(tmp_path, tiny_bert_dir, tiny_sentiment, {
        "isolation": "process",
        "strategies": ["head", "bitfit", {"name": "ensemble", "settings": {"members": ["head", "bitfit"]}}],
    })


def test_two_workers_run_two_cells_at_once_and_an_ensemble_after_its_members(member_and_ensemble_sweep, tmp_path):
    events = run_recorded(member_and_ensemble_sweep, tmp_path / "two", workers=2)
    head, bitfit, ensemble = "head-kall-seed42", "bitfit-kall-seed42", "ensemble-kall-seed42"
    # both members started before either ended: two processes at once
    assert events[:2] == [("start", head), ("start", bitfit)]
    # the ensemble reads both members' outputs: it starts only after both ended, although a slot was free earlier
    assert events.index(("start", ensemble)) > max(events.index(("end", head)), events.index(("end", bitfit)))
    cores = len(os.sched_getaffinity(0))
    for cell in (head, bitfit):
        costs = json.loads((tmp_path / "two" / cell / "costs.json").read_text())
        assert costs["torch_threads"] == max(1, cores // 2)  # the cores shared out


def test_one_worker_runs_one_cell_at_a_time_with_every_core(member_and_ensemble_sweep, tmp_path):
    events = run_recorded(member_and_ensemble_sweep, tmp_path / "one", workers=1)
    kinds = [kind for kind, _ in events]
    assert kinds == ["start", "end"] * 3
    costs = json.loads((tmp_path / "one" / "head-kall-seed42" / "costs.json").read_text())
    import torch

    assert costs["torch_threads"] == torch.get_num_threads()  # torch's default, as before workers existed


def test_workers_sweep_from_the_command_line_gives_the_same_results(member_and_ensemble_sweep, tmp_path, capsys):
    """The whole sweep with workers 2 (`tunelab compare ... sweep.workers=2`): every cell finished, the report
    written, and the same test metrics as one at a time (tiny models: the thread count moves no prediction)."""
    from tunelab.cli import main

    serial = tmp_path / "serial"
    parallel = tmp_path / "parallel"
    assert main(["compare", str(member_and_ensemble_sweep), "--out", str(serial)]) == 0
    assert "at once" not in capsys.readouterr().out
    assert main(["compare", str(member_and_ensemble_sweep), "sweep.workers=2", "--out", str(parallel)]) == 0
    cores = len(os.sched_getaffinity(0))  # the start says what workers does here
    assert f"2 cells at once, {max(1, cores // 2)} torch thread(s) each ({cores} cores; sweep.workers)" in capsys.readouterr().out
    assert (parallel / "report.html").is_file()
    for cell in ("head-kall-seed42", "bitfit-kall-seed42", "ensemble-kall-seed42"):
        assert is_finished(parallel, cell)
        one = json.loads((serial / cell / "metrics.json").read_text())["test"]
        two = json.loads((parallel / cell / "metrics.json").read_text())["test"]
        assert two == pytest.approx(one, abs=1e-6)


def test_a_failing_cell_beside_another_is_recorded_and_the_other_finishes(tmp_path, tiny_bert_dir, broken_weights_dir,
                                                                         tiny_sentiment):
    path = sweep_yaml(tmp_path, tiny_bert_dir, tiny_sentiment, {
        "isolation": "process", "workers": 2,
        "strategies": [{"name": "full", "model": {"name": str(broken_weights_dir)}}, "head"],  # fails loading weights
    })
    outcome = run_sweep(load_experiment(path, []))
    assert outcome.failed == ["full-kall-seed42"] and outcome.ran == 2
    assert is_finished(outcome.root, "head-kall-seed42")
    failure = json.loads((outcome.root / "full-kall-seed42.failed.json").read_text())
    assert failure["error_type"] == "ModelError" and str(broken_weights_dir) in failure["message"]


def test_workers_without_process_isolation_is_refused_naming_the_line(tmp_path, tiny_bert_dir, tiny_sentiment):
    path = sweep_yaml(tmp_path, tiny_bert_dir, tiny_sentiment, {"workers": 2, "strategies": ["head"]})  # isolation none
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if text.strip().startswith("workers:"))
    with pytest.raises(ConfigError, match=rf"exp.yaml, line {line}: sweep.workers 2 .*isolation is 'none'"):
        run_sweep(load_experiment(path, []))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("value", ["0", "two"])
def test_a_bad_workers_override_exits_2(member_and_ensemble_sweep, value, capsys):
    from tunelab.cli import main

    assert main(["compare", str(member_and_ensemble_sweep), f"sweep.workers={value}"]) == 2
    assert "sweep.workers" in capsys.readouterr().err
    raw = yaml.safe_load(member_and_ensemble_sweep.read_text())
    assert not (member_and_ensemble_sweep.parent / raw["output_dir"]).exists()


def plan_cell(cell_id: str, after: tuple[str, ...] = ()):
    from tunelab.sweep.expand import Cell

    return Cell(id=cell_id, strategy=cell_id, method="head", family="finetune", k_shot=None, seed=1, variant=None,
                after=after)


def test_estimate_lays_cells_out_as_the_executor_starts_them():
    from tunelab.sweep.estimate import schedule_seconds

    member, reader, short = plan_cell("member"), plan_cell("reader", after=("member",)), plan_cell("short")
    seconds = {"member": 100.0, "reader": 50.0, "short": 10.0}
    # one at a time: the sum; two at once: the reader waits for its member (150 s), not the summed 160 s / 2
    assert schedule_seconds([member, reader, short], seconds, 1) == 160.0
    assert schedule_seconds([member, reader, short], seconds, 2) == 150.0
    # a long cell left at the end runs alone: 300 s, not (100 + 100 + 300) / 2
    pair = [plan_cell("a"), plan_cell("b"), plan_cell("long")]
    assert schedule_seconds(pair, {"a": 100.0, "b": 100.0, "long": 300.0}, 2) == 400.0
    assert schedule_seconds(pair[::-1], {"a": 100.0, "b": 100.0, "long": 300.0}, 2) == 300.0
    # a cell with no estimate counts as none; a reader of a finished cell (not among those to run) starts at once
    assert schedule_seconds([plan_cell("new"), plan_cell("r", after=("done",))], {"r": 5.0}, 2) == 5.0


@pytest.mark.parametrize("workers, cores, line", [
    (1, 2, ""),
    (2, 8, "2 cells at once, 4 torch thread(s) each (8 cores; sweep.workers)"),
    (4, 2, "4 cells at once, 1 torch thread(s) each (2 cores; sweep.workers): more cells than cores, so they share cores"),
])
def test_the_sweep_start_says_what_workers_does_on_this_machine(monkeypatch, workers, cores, line):
    from tunelab.sweep.local_executor import workers_line

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert workers_line(workers) == line
