"""Sweeps on tiny random models: matrix expansion, schema errors, resume, interruption, failures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import experiment_yaml
from test_prompt_strategies import tiny_lm_dir  # noqa: F401
from tunelab.config import load_experiment
from tunelab.errors import ConfigError, UserError
from tunelab.methods.classifier import ClassifierStrategy
from tunelab.sweep import plan_sweep, run_sweep
from tunelab.sweep.cell import CellStrategy, is_finished
from tunelab.sweep.runner import sweep_lock


def sweep_yaml(tmp_path: Path, model_dir, data, sweep: dict, **sections) -> Path:
    path = experiment_yaml(tmp_path / "exp.yaml", model_dir, data, {"name": "head"}, **sections)
    raw = yaml.safe_load(path.read_text())
    raw["train"].update(epochs=1, eval_strategy="no")
    raw["output_dir"] = str(tmp_path / "runs")
    raw["sweep"] = {"isolation": "none", **sweep}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture
def fit_calls(monkeypatch):
    """Count (and optionally sabotage) every fit of the head-readout strategies."""
    calls, original = [], ClassifierStrategy.fit
    sabotage = {}

    def spy(self, splits, run_dir):
        key = (self.strategy_name, self.experiment.train.seed)
        calls.append(key)
        if key in sabotage:
            raise sabotage[key]
        return original(self, splits, run_dir)

    monkeypatch.setattr(ClassifierStrategy, "fit", spy)
    return calls, sabotage


# --------------------------------------------------------------------------------------------- expansion


def test_matrix_expansion(tmp_path, tiny_bert_dir, tiny_sentiment):
    path = sweep_yaml(tmp_path, tiny_bert_dir, tiny_sentiment, {
        "k_shot": [2, 4], "seeds": [1, 2],
        "prompts": {"A": {"template": "{{ text }} It was"}, "B": {"template": "Review: {{ text }}"}},
        "strategies": [
            "head",
            {"name": "bitfit", "train": {"learning_rate": 0.5}, "search": {"train.epochs": [1, 2]}},
            {"name": "zero_shot", "prompt": {"verbalizer": {"negative": "bad", "positive": "good"}}},
            {"name": "head", "id": "head_lr", "search": {"train.learning_rate": [1e-4, 1e-3, 1e-2]}, "search_trials": 2},
        ],
    }, prompt={"template": "base {{ text }}"})
    _, cells = plan_sweep(load_experiment(path))
    # per K and seed: head 1 + bitfit 2 combos + head_lr 2 of 3 trials; zero_shot's 2 variants once per K
    # (no seed changes a zero-shot result)
    assert len(cells) == 2 * 2 * (1 + 2 + 2) + 2 * 2
    assert len({c.id for c in cells}) == len(cells)
    by_id = {c.id: c for c in cells}
    assert set(by_id) >= {"head-k2-seed1", "bitfit-k4-epochs=2-seed2", "zero_shot-k2-A-seed1", "zero_shot-k4-B-seed1"}
    assert "zero_shot-k4-B-seed2" not in by_id
    bitfit = by_id["bitfit-k4-epochs=2-seed2"]
    assert bitfit.config["train"] == {**bitfit.config["train"], "epochs": 2, "learning_rate": 0.5, "seed": 2}
    assert bitfit.config["data"]["k_shot"] == 4 and bitfit.group == "bitfit-k4" and bitfit.search == {"train.epochs": 2}
    zero = by_id["zero_shot-k2-A-seed1"]
    # variant over entry over base
    assert zero.config["prompt"] == {"template": "{{ text }} It was", "verbalizer": {"negative": "bad", "positive": "good"}}
    assert zero.variant == "A" and zero.family == "prompting"
    assert by_id["head-k2-seed1"].variant is None  # fine-tuning strategies ignore prompt variants
    lrs = [c.search["train.learning_rate"] for c in cells if c.strategy == "head_lr" and c.seed == 1 and c.k_shot == 2]
    assert len(lrs) == 2 and lrs == sorted(lrs, key=[1e-4, 1e-3, 1e-2].index)
    # the same random draw every time (resume must find the same cells)
    assert [c.id for c in plan_sweep(load_experiment(path))[1]] == [c.id for c in cells]


@pytest.mark.parametrize("sweep, expected", [
    ({"strategies": [{"name": "head", "setings": {}}]}, "unknown key 'sweep.strategies.0.setings' — did you mean 'sweep.strategies.0.settings'"),
    ({"strategies": [{"name": "head", "train": {"learnig_rate": 1}}]}, "sweep.strategies.0.train.learnig_rate"),
    ({"strategies": ["head"], "seed": [1]}, "unknown key 'sweep.seed' — did you mean 'sweep.seeds'"),
    ({"strategies": ["hed"]}, "did you mean 'head'"),
    ({"strategies": [{"name": "partial", "settings": {"bogus": 1}}]}, "sweep.strategies.0.settings.bogus"),
    ({"strategies": [{"name": "head", "search": {"lr": [1]}}]}, "must start with one of train."),
    ({"strategies": ["head", "head"]}, "distinct ids"),
    ({"strategies": [{"name": "head", "prompt_variants": ["X"]}]}, "not in sweep.prompts"),
    ({"strategies": ["head"], "seeds": [1, 1]}, "duplicates"),
    ({"strategies": [{"name": "head", "search": {"train.learning_rate": [-1.0]}}]}, "sweep cell head-kall-learning_rate=-1-seed42"),
])
def test_bad_sweeps_name_the_key(tmp_path, tiny_bert_dir, tiny_sentiment, sweep, expected):
    path = sweep_yaml(tmp_path, tiny_bert_dir, tiny_sentiment, sweep)
    with pytest.raises(ConfigError) as err:
        plan_sweep(load_experiment(path))
    assert expected in str(err.value)
    if "unknown key" in expected:
        assert ", line " in str(err.value)


# --------------------------------------------------------------------------------------------- running


def small_sweep(tmp_path, tiny_bert_dir, tiny_sentiment, **extra):
    return sweep_yaml(tmp_path, tiny_bert_dir, tiny_sentiment, {"seeds": [1, 2], "strategies": ["head", "bitfit"], **extra})


def test_resume_skips_finished_cells(tmp_path, tiny_bert_dir, tiny_sentiment, fit_calls):
    calls, _ = fit_calls
    path = small_sweep(tmp_path, tiny_bert_dir, tiny_sentiment)
    first = run_sweep(load_experiment(path))
    assert (first.ran, first.skipped, first.failed) == (4, 0, [])
    assert sorted(calls) == [("bitfit", 1), ("bitfit", 2), ("head", 1), ("head", 2)]
    root = first.root
    assert all(is_finished(root, c.id) for c in first.cells)
    cell = json.loads((root / "head-kall-seed1" / "cell.json").read_text())
    assert cell["seed"] == 1 and cell["config"]["train"]["seed"] == 1

    calls.clear()
    again = run_sweep(load_experiment(path))
    assert (again.ran, again.skipped, calls) == (0, 4, [])

    shutil.rmtree(root / "bitfit-kall-seed2")
    third = run_sweep(load_experiment(path))
    assert (third.ran, third.skipped, calls) == (1, 3, [("bitfit", 2)])


def test_cells_keep_their_dev_predictions_with_label_scores(tmp_path, tiny_bert_dir, tiny_sentiment):
    """What an `ensemble` entry reads: each member cell's label scores on the K-shot dev split."""
    root = run_sweep(load_experiment(sweep_yaml(tmp_path, tiny_bert_dir, tiny_sentiment, {"strategies": ["head"]}))).root
    rows = [json.loads(line) for line in (root / "head-kall-seed42" / "dev_predictions.jsonl").read_text().splitlines()]
    dev = [json.loads(line) for line in Path(tiny_sentiment["dev"]).read_text().splitlines()]
    assert [r["text"] for r in rows] == [d["text"] for d in dev]
    assert all(set(r["scores"]) == {"negative", "positive"} and r["prediction"] in r["scores"] for r in rows)


def test_a_cell_standing_for_every_seed_is_scored_on_each_seeds_dev_split(tmp_path, tiny_bert_dir, tiny_sentiment, tiny_lm_dir):
    """zero_shot runs once for all seeds; the rows beside it average their seeds' dev splits, so it must too: one
    easy draw of dev examples would otherwise decide the comparison."""
    path = sweep_yaml(tmp_path, tiny_bert_dir, tiny_sentiment, {"k_shot": [2], "seeds": [1, 2, 3], "strategies": [
        "head", {"name": "zero_shot", "model": {"name": str(tiny_lm_dir), "max_length": 32}}]},
        prompt={"template": "{{ text }} It was", "verbalizer": {"negative": "bad", "positive": "good"}})
    raw = yaml.safe_load(path.read_text())
    raw["data"].pop("dev")  # drawn from train per seed (the LM-BFF protocol)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    root = run_sweep(load_experiment(path)).root
    cell = root / "zero_shot-k2-seed1"
    costs = json.loads((cell / "costs.json").read_text())
    per_seed = costs["dev_per_seed"]
    assert sorted(per_seed) == ["1", "2", "3"]
    assert costs["best_dev"]["accuracy"] == pytest.approx(sum(s["accuracy"] for s in per_seed.values()) / 3)
    rows = [json.loads(line) for line in (cell / "dev_predictions.jsonl").read_text().splitlines()]
    for seed in (1, 2, 3):  # the same dev splits as the head cells of those seeds
        head = [json.loads(line)["text"] for line in (root / f"head-k2-seed{seed}" / "dev_predictions.jsonl").read_text().splitlines()]
        assert [r["text"] for r in rows[(seed - 1) * 4:seed * 4]] == head
    # finished before (one seed's dev score): refused on resume, with the fix
    meta = json.loads((cell / "cell.json").read_text())
    meta.pop("dev_seeds")
    (cell / "cell.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"zero_shot-k2-seed1: its dev score is from seed 1's dev split alone"):
        run_sweep(load_experiment(path))


def test_interrupted_cell_is_not_mistaken_for_finished(tmp_path, tiny_bert_dir, tiny_sentiment, fit_calls):
    calls, sabotage = fit_calls
    path = small_sweep(tmp_path, tiny_bert_dir, tiny_sentiment)
    sabotage[("head", 2)] = KeyboardInterrupt()  # Ctrl-C in the middle of the third cell
    with pytest.raises(KeyboardInterrupt):
        run_sweep(load_experiment(path))
    root = tmp_path / "runs" / "tiny"
    assert is_finished(root, "head-kall-seed1") and is_finished(root, "bitfit-kall-seed1")
    assert not (root / "head-kall-seed2").exists()
    assert not list(root.glob(".*.partial")) and not list(root.glob("*.failed.json"))

    # A kill -9 leaves a staging directory behind, complete-looking inside: it must not count.
    staging = root / ".bitfit-kall-seed2.partial"
    shutil.copytree(root / "bitfit-kall-seed1", staging)
    del sabotage[("head", 2)]
    calls.clear()
    outcome = run_sweep(load_experiment(path))
    assert sorted(calls) == [("bitfit", 2), ("head", 2)] and outcome.skipped == 2
    assert not staging.exists()
    assert json.loads((root / "bitfit-kall-seed2" / "cell.json").read_text())["seed"] == 2


@pytest.mark.parametrize("stop", ["ctrl_c", "kill"])
def test_interrupted_compare_says_what_is_kept_and_how_to_go_on(tmp_path, tiny_bert_dir, tiny_sentiment, fit_calls,
                                                                 capsys, monkeypatch, stop):
    import os
    import signal

    from tunelab.cli import main

    calls, sabotage = fit_calls
    path = small_sweep(tmp_path, tiny_bert_dir, tiny_sentiment)
    spy = ClassifierStrategy.fit
    if stop == "ctrl_c":
        sabotage[("head", 2)] = KeyboardInterrupt()  # Ctrl-C in the middle of the third cell
    else:
        def killed_in_third_cell(self, splits, run_dir):
            if (self.strategy_name, self.experiment.train.seed) == ("head", 2):
                os.kill(os.getpid(), signal.SIGTERM)  # the sweep's handler turns it into a stop
                raise AssertionError("SIGTERM did not stop the sweep")
            return spy(self, splits, run_dir)

        monkeypatch.setattr(ClassifierStrategy, "fit", killed_in_third_cell)
    assert main(["compare", str(path)]) == 130
    root = tmp_path / "runs" / "tiny"
    err = capsys.readouterr().err
    assert f"stopped: 2 of 4 cells finished in {root} and are kept; the same command resumes the other 2" in err
    assert f"`tunelab report {root}`" in err and err.rstrip().endswith("interrupted")

    # the hint holds: a report of the finished cells, without running anything, that says it is partial
    calls.clear()
    assert main(["report", str(root)]) == 0 and calls == []
    out = " ".join(capsys.readouterr().out.split())  # the terminal wraps the recommendation
    partial = ("Warning: the sweep is not complete: 2 cell(s) at this K have not finished (fewer seeds than "
               "planned: bitfit-kall, head-kall), so the pick is among the cells finished so far")
    assert partial in out and partial in " ".join((root / "report.md").read_text().split())

    sabotage.clear()  # resumed to the end: the warning goes
    monkeypatch.setattr(ClassifierStrategy, "fit", spy)
    assert main(["compare", str(path)]) == 0
    assert "the sweep is not complete" not in capsys.readouterr().out


def test_broken_cell_is_recorded_and_the_sweep_goes_on(tmp_path, tiny_bert_dir, tiny_sentiment, fit_calls):
    calls, sabotage = fit_calls
    sabotage[("head", 1)] = RuntimeError("deliberately broken")
    outcome = run_sweep(load_experiment(small_sweep(tmp_path, tiny_bert_dir, tiny_sentiment)))
    root = outcome.root
    assert outcome.failed == ["head-kall-seed1"] and outcome.ran == 4
    failure = json.loads((root / "head-kall-seed1.failed.json").read_text())
    assert failure["error_type"] == "RuntimeError" and failure["message"] == "deliberately broken"
    assert "deliberately broken" in (root / failure["log"]).read_text()
    assert not (root / "head-kall-seed1").exists() and is_finished(root, "head-kall-seed2")

    from tunelab.report import build_report

    report = build_report(root)
    html = report.html.read_text()
    assert "head-kall-seed1" in html and "deliberately broken" in html
    assert "deliberately broken" in report.markdown.read_text()

    del sabotage[("head", 1)]  # fixed: the retry runs only the failed cell and clears its record
    calls.clear()
    retry = run_sweep(load_experiment(small_sweep(tmp_path, tiny_bert_dir, tiny_sentiment)))
    assert calls == [("head", 1)] and retry.failed == []
    assert not (root / "head-kall-seed1.failed.json").exists()


def test_a_k_larger_than_the_data_stops_the_sweep_before_any_cell(tmp_path, tiny_bert_dir, tiny_sentiment, fit_calls, capsys):
    from tunelab.cli import main

    calls, _ = fit_calls
    path = small_sweep(tmp_path, tiny_bert_dir, tiny_sentiment)
    root = run_sweep(load_experiment(path)).root
    plan = (root / "sweep.json").read_text()
    calls.clear()
    assert main(["compare", str(path), "sweep.k_shot=[50]"]) == 2  # 5 training examples per class
    err = capsys.readouterr().err
    assert "sweep cell head-k50-seed1 (K=50, seed 1)" in err and "fewer than k_shot" in err
    assert calls == [] and (root / "sweep.json").read_text() == plan  # the finished sweep's report still reads it


def test_moved_data_still_counts_but_edited_data_is_refused(tmp_path, tiny_bert_dir, tiny_sentiment, fit_calls):
    calls, _ = fit_calls
    root = run_sweep(load_experiment(small_sweep(tmp_path, tiny_bert_dir, tiny_sentiment))).root
    moved = tmp_path / "moved"
    moved.mkdir()
    data = {split: str(shutil.copy(path, moved / Path(path).name)) for split, path in tiny_sentiment.items()}
    calls.clear()
    again = run_sweep(load_experiment(small_sweep(tmp_path, tiny_bert_dir, data)))  # same content, new paths
    assert again.root == root and (again.ran, again.skipped) == (0, 4) and calls == []
    with open(data["train"], "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"text": "great fun", "label": "positive"}) + "\n")
    with pytest.raises(ConfigError, match=r"data.train: the file's content changed since the cell ran"):
        run_sweep(load_experiment(small_sweep(tmp_path, tiny_bert_dir, data)))
    assert calls == []


def test_finished_cells_copied_into_a_renamed_extended_experiment_still_count(tmp_path, tiny_bert_dir, tiny_sentiment, fit_calls):
    """An experiment file copied under a new name with one more strategy (e.g. a larger model's entry) reuses
    the finished cells of the original once they are copied into its sweep: only the new entry runs."""
    calls, _ = fit_calls
    root = run_sweep(load_experiment(small_sweep(tmp_path, tiny_bert_dir, tiny_sentiment))).root
    path = sweep_yaml(tmp_path, tiny_bert_dir, tiny_sentiment, {"seeds": [1, 2], "strategies": ["head", "bitfit", "full"]})
    raw = yaml.safe_load(path.read_text())
    raw["name"] = "tiny-extended"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    extended = tmp_path / "runs" / "tiny-extended"
    extended.mkdir()
    for cell in ("head-kall-seed1", "head-kall-seed2", "bitfit-kall-seed1", "bitfit-kall-seed2"):
        shutil.copytree(root / cell, extended / cell)
    calls.clear()
    outcome = run_sweep(load_experiment(path))
    assert outcome.root == extended and (outcome.ran, outcome.skipped) == (2, 4)
    assert sorted(calls) == [("full", 1), ("full", 2)]


def test_changed_configuration_is_refused(tmp_path, tiny_bert_dir, tiny_sentiment):
    path = sweep_yaml(tmp_path, tiny_bert_dir, tiny_sentiment, {"strategies": ["head"]})
    run_sweep(load_experiment(path))
    with pytest.raises(ConfigError, match=r"head-kall-seed42: train.learning_rate: 0.001 → 0.01"):
        run_sweep(load_experiment(path, ["train.learning_rate=0.01"]))


def test_optimiser_settings_do_not_stop_a_finished_prompting_cell_from_resuming(tmp_path, tiny_llama_dir, tiny_sentiment):
    """init's files keep their trained entry's learning rate at the top: tuning it re-runs nothing that prompts,
    while a setting prompting reads (the dev metric) still refuses."""
    path = sweep_yaml(tmp_path, tiny_llama_dir, tiny_sentiment, {"strategies": ["zero_shot"]})
    assert run_sweep(load_experiment(path)).ran == 1
    again = run_sweep(load_experiment(path, ["train.learning_rate=0.01", "train.epochs=7", "train.batch_size=2"]))
    assert (again.ran, again.skipped, again.failed) == (0, 1, [])
    with pytest.raises(ConfigError, match=r"zero_shot-kall-seed42: train.metric_for_best: None → 'f1'"):
        run_sweep(load_experiment(path, ["train.metric_for_best=f1"]))


def test_one_sweep_at_a_time(tmp_path, tiny_bert_dir, tiny_sentiment):
    path = sweep_yaml(tmp_path, tiny_bert_dir, tiny_sentiment, {"strategies": ["head"]})
    root = tmp_path / "runs" / "tiny"
    root.mkdir(parents=True)
    with sweep_lock(root), pytest.raises(UserError, match="another `tunelab compare` is running"):
        run_sweep(load_experiment(path))


def test_dev_metric_is_filled_in_for_strategies_that_report_none(tmp_path, tiny_bert_dir, tiny_sentiment):
    """Search picks by dev: a strategy that does not train (no best_dev) gets its dev split scored."""
    config = load_experiment(sweep_yaml(tmp_path, tiny_bert_dir, tiny_sentiment, {"strategies": ["head"]}))

    class Predictor:
        def predict(self, examples):
            return [{"prediction": "positive"} for _ in examples]

    class NoDev:
        def fit(self, splits, run_dir):
            return Predictor(), {"best_dev": {}}

    class Splits:
        dev = [{"text": "a", "label": "positive"}, {"text": "b", "label": "negative"}]

    meta = {"id": "x", "seed": 1}
    _, costs = CellStrategy(NoDev(), meta, config).fit(Splits(), tmp_path)
    assert costs["best_dev"]["accuracy"] == 0.5 and costs["dev_scored_by"] == "sweep"
    assert json.loads((tmp_path / "cell.json").read_text()) == meta


def test_compare_cli_in_child_processes(tmp_path, tiny_bert_dir, broken_weights_dir, tiny_sentiment, capsys):
    """The default isolation: each cell in its own process; a cell failing there is recorded."""
    from tunelab.cli import main

    path = sweep_yaml(tmp_path, tiny_bert_dir, tiny_sentiment, {
        "isolation": "process", "strategies": ["head", {"name": "full", "model": {"name": str(broken_weights_dir)}}],
    })
    assert main(["compare", str(path)]) == 0
    out = capsys.readouterr()
    root = tmp_path / "runs" / "tiny"
    assert f"report: {root / 'report.html'}" in out.out
    assert is_finished(root, "head-kall-seed42")
    failure = json.loads((root / "full-kall-seed42.failed.json").read_text())
    assert failure["error_type"] == "ModelError" and str(broken_weights_dir) in failure["message"]
    assert "1 cell(s) failed" in out.err
    # a failed cell leaves its row out: the recommendation says so rather than pick as if it had lost
    assert ("the sweep is not complete: 1 cell(s) at this K have not finished (no finished cell yet: "
            "full-kall)") in " ".join(out.out.split())
    costs = json.loads((root / "head-kall-seed42" / "costs.json").read_text())
    assert costs["peak_memory_mb"] > 0 and costs["trainable_params"] > 0

    assert main(["compare", str(path), "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert "finished  head-kall-seed42" in listing and "to run    full-kall-seed42" in listing


def _sleep_until_stopped(lifeline, marker: str) -> None:
    from tunelab.sweep.cell import _interrupt, die_with_parent
    import signal
    import time

    try:  # the interrupt may arrive as soon as the watcher starts: the sweep "died" at once here
        signal.signal(signal.SIGTERM, _interrupt)
        die_with_parent(lifeline)
        time.sleep(60)
    except KeyboardInterrupt:
        Path(marker).write_text("stopped cleanly")


def test_a_cell_process_stops_when_the_sweep_process_dies(tmp_path):
    """The lifeline: when the sweep's end of the pipe closes (its death, even by SIGKILL), the cell
    process gets KeyboardInterrupt (so `execute` cleans its staging directory) instead of training on."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    lifeline, keep_alive = context.Pipe(duplex=False)
    marker = tmp_path / "stopped"
    child = context.Process(target=_sleep_until_stopped, args=(lifeline, str(marker)))
    child.start()
    lifeline.close()
    keep_alive.close()  # what the kernel does when the sweep process dies
    child.join(30)
    assert not child.is_alive() and marker.read_text() == "stopped cleanly"


@pytest.mark.parametrize("entry, every_seed", [
    ("zero_shot", False),
    ({"name": "zero_shot", "settings": {"calibrate": True}}, False),
    ({"name": "zero_shot", "settings": {"search_label_words": {}}}, True),   # words searched on the seed's train draw
    ({"name": "zero_shot", "settings": {"templates": ["{{ text }} It was", "Review: {{ text }}"]}}, True),  # chosen on dev
    ({"name": "few_shot", "settings": {"k": 2}}, True),
    ({"name": "prompt_ensemble", "settings": {"templates": ["{{ text }} It was", "Review: {{ text }}"]}}, False),
    ({"name": "prompt_ensemble", "settings": {"templates": ["{{ text }} It was", "Review: {{ text }}"], "k": 1}}, True),
    ({"name": "cot", "settings": {"mode": "zero_shot"}}, False),
    ({"name": "cot", "settings": {"mode": "zero_shot", "self_consistency": 3}}, True),   # sampled chains
    ({"name": "cot", "settings": {"mode": "few_shot"}}, True),
    ({"name": "generate", "settings": {"generation": {"do_sample": True}}}, True),
    ({"name": "generate", "settings": {"generation": {"do_sample": True, "seed": 7}}}, False),
    ("head", True),
])
def test_only_strategies_that_read_the_seed_run_every_seed(tmp_path, tiny_bert_dir, tiny_sentiment, entry, every_seed):
    from tunelab.methods import get_strategy
    from tunelab.sweep.expand import reads_seed

    raw = {"name": entry} if isinstance(entry, str) else {"name": entry["name"], **entry.get("settings", {})}
    assert reads_seed(get_strategy(raw["name"]), raw) is every_seed
    if isinstance(entry, str):
        path = sweep_yaml(tmp_path, tiny_bert_dir, tiny_sentiment, {"seeds": [1, 2, 3], "strategies": [entry]},
                          prompt={"verbalizer": {"negative": "bad", "positive": "good"}})
        seeds = [c.seed for c in plan_sweep(load_experiment(path))[1]]
        assert seeds == ([1, 2, 3] if every_seed else [1])


def test_search_and_prompt_variants_end_to_end(tmp_path, tiny_bert_dir, tiny_llama_dir, tiny_sentiment):
    """Real (tiny) cells through to the report: the search row is chosen on dev, prompt variants are A/B-tested."""
    from tunelab.report import build_report

    path = sweep_yaml(tmp_path, tiny_bert_dir, tiny_sentiment, {
        "k_shot": [2], "seeds": [1, 2],
        "prompts": {"A": {"template": "{{ text }} It was"}, "B": {"template": "Review: {{ text }}"}},
        "strategies": [
            {"name": "head", "search": {"train.learning_rate": [1e-4, 1e-1]}},
            {"name": "zero_shot", "model": {"name": str(tiny_llama_dir)}},
        ],
    }, prompt={"verbalizer": {"negative": "bad", "positive": "good"}, "use_chat_template": False})
    outcome = run_sweep(load_experiment(path))
    assert outcome.failed == [] and outcome.ran == 6   # head 2 lr × 2 seeds; zero_shot 2 variants, once each
    zero = json.loads((outcome.root / "zero_shot-k2-A-seed1" / "costs.json").read_text())
    assert "accuracy" in zero["best_dev"]  # every cell has a dev score (search picks by it)
    report = build_report(outcome.root)
    md = report.markdown.read_text()
    ab = md.split("## Prompt A/B tests")[1].split("## ")[0]
    assert "| zero_shot | 2 | A | B | 1 | 4 |" in ab  # 4 paired test examples
    search = md.split("## Hyper-parameter search")[1].split("## ")[0]
    assert search.count("| head-k2 |") == 2 and search.count("chosen") >= 1
    assert "held out from that choice" in search  # the cells kept their dev outputs: the row is compared held out
    assert {r.group for r in report.rows} == {"head-k2", "zero_shot-k2-A", "zero_shot-k2-B"}


def test_results_only_cells_keep_no_weights(tmp_path, tiny_bert_dir, tiny_sentiment):
    path = sweep_yaml(tmp_path, tiny_bert_dir, tiny_sentiment, {"strategies": ["head"], "save_artifacts": False})
    root = run_sweep(load_experiment(path)).root
    directory = root / "head-kall-seed42"
    assert is_finished(root, "head-kall-seed42") and (directory / "NO_ARTIFACT").is_file()
    assert not list(directory.glob("*.safetensors")) and (directory / "predictions.jsonl").is_file()
