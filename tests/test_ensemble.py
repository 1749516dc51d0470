"""`ensemble` on tiny random models: its scores are the weighted mean of its members' stored distributions
on dev and test (so dev scores it like any strategy), each member first tempered by the temperature fitted on
dev, with a dev score held out from those temperatures; its cells wait for their members (Ray too), its costs
add up, a saved ensemble predicts new text from its members' models, and bad member lists exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import experiment_yaml, run_on_fake_ray, write_jsonl
from test_distill import sentiment_rows
from tunelab.calibration import fit_temperature, temper
from tunelab.cli import main
from tunelab.config import load_experiment
from tunelab.errors import ConfigError
from tunelab.methods.ensemble import cross_fitted_mean
from tunelab.sweep import plan_sweep, run_sweep
from tunelab.sweep.expand import Cell

LABELS = ["negative", "positive"]
MEMBERS = [{"name": "head", "train": {"learning_rate": 1e-2}}, {"name": "bitfit", "train": {"learning_rate": 1e-1}}]


def sweep_file(tmp_path, tiny_bert_dir, strategies: list, **extra) -> Path:
    rows = sentiment_rows(36)
    data = {"train": str(write_jsonl(tmp_path / "train.jsonl", rows[:24])),
            "dev": str(write_jsonl(tmp_path / "dev.jsonl", rows[24:30])),
            "test": str(write_jsonl(tmp_path / "test.jsonl", rows[30:]))}
    path = experiment_yaml(tmp_path / "exp.yaml", tiny_bert_dir, data, {"name": "head"})
    raw = yaml.safe_load(path.read_text())
    raw["train"].update(epochs=2)
    raw["output_dir"] = str(tmp_path / "runs")
    raw["sweep"] = {"isolation": "none", "seeds": [1], "save_artifacts": False, "strategies": strategies, **extra}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("weights", [None, [3.0, 1.0]])
def test_uncalibrated_the_ensemble_is_the_weighted_mean_of_its_members_on_dev_and_test(tmp_path, tiny_bert_dir, weights):
    settings = {"members": ["head", "bitfit"], "calibration": "none", **({"weights": weights} if weights else {})}
    path = sweep_file(tmp_path, tiny_bert_dir, MEMBERS + [{"name": "ensemble", "settings": settings}])
    _, cells = plan_sweep(load_experiment(path))
    ensemble = next(c for c in cells if c.strategy == "ensemble")
    assert ensemble.after == ("head-kall-seed1", "bitfit-kall-seed1") == tuple(ensemble.config["strategy"]["member_cells"])
    outcome = run_sweep(load_experiment(path))
    assert outcome.failed == [] and outcome.ran == 3
    root = outcome.root
    w = [0.75, 0.25] if weights else [0.5, 0.5]
    for name in ("dev_predictions.jsonl", "predictions.jsonl", "perturbed_predictions.jsonl"):
        head, bitfit, mean = (rows_of(root / cell / name) for cell in ("head-kall-seed1", "bitfit-kall-seed1",
                                                                      "ensemble-kall-seed1"))
        assert len(mean) == len(head) > 0
        for a, b, m in zip(head, bitfit, mean):
            expected = {label: w[0] * a["scores"][label] + w[1] * b["scores"][label] for label in LABELS}
            assert m["scores"] == pytest.approx(expected)
            assert m["prediction"] == max(expected, key=expected.get)
    # dev scores the ensemble like any strategy: from its averaged dev outputs
    dev = rows_of(root / "ensemble-kall-seed1" / "dev_predictions.jsonl")
    metrics = json.loads((root / "ensemble-kall-seed1" / "metrics.json").read_text())
    assert metrics["dev"]["accuracy"] == pytest.approx(sum(r["prediction"] == r["label"] for r in dev) / len(dev))
    costs = {cell: json.loads((root / cell / "costs.json").read_text())
             for cell in ("head-kall-seed1", "bitfit-kall-seed1", "ensemble-kall-seed1")}
    ens = costs.pop("ensemble-kall-seed1")
    for key in ("trainable_params", "total_params", "train_seconds"):
        assert ens[key] == pytest.approx(sum(c[key] for c in costs.values()))
    assert ens["eval_seconds"] >= sum(c["eval_seconds"] for c in costs.values())
    assert main(["report", str(root)]) == 0  # a row of its own, family "ensemble", plots and all
    assert "| ensemble |" in (root / "leaderboard.md").read_text()


def distributions(rows: list[dict]) -> np.ndarray:
    return np.array([[row["scores"][label] for label in LABELS] for row in rows])


def test_calibrated_the_ensemble_averages_its_members_tempered_by_temperatures_fitted_on_dev(tmp_path, tiny_bert_dir):
    path = sweep_file(tmp_path, tiny_bert_dir, MEMBERS + [{"name": "ensemble", "settings": {"members": ["head", "bitfit"]}}])
    root = run_sweep(load_experiment(path)).root
    cells = ("head-kall-seed1", "bitfit-kall-seed1")
    costs = json.loads((root / "ensemble-kall-seed1" / "costs.json").read_text())
    dev = [rows_of(root / cell / "dev_predictions.jsonl") for cell in cells]
    gold = np.array([LABELS.index(row["label"]) for row in dev[0]])
    assert costs["member_cells"] == list(cells)  # the report names the ensemble's models from these
    temperatures = [costs["member_temperatures"][cell] for cell in cells]
    assert temperatures == [fit_temperature(distributions(rows), gold) for rows in dev]  # fitted on the whole dev split
    test = [distributions(rows_of(root / cell / "predictions.jsonl")) for cell in cells]
    mean = rows_of(root / "ensemble-kall-seed1" / "predictions.jsonl")
    expected = (temper(test[0], temperatures[0]) + temper(test[1], temperatures[1])) / 2
    np.testing.assert_allclose(distributions(mean), expected, rtol=1e-9)
    # dev: each example under temperatures fitted without its fold, scored as metrics.json's dev
    held = json.loads((root / "ensemble-kall-seed1" / "held_out_dev.json").read_text())
    fold = np.array(held["fold_of_example"])
    ens_dev = rows_of(root / "ensemble-kall-seed1" / "dev_predictions.jsonl")
    np.testing.assert_allclose(distributions(ens_dev), cross_fitted_mean([distributions(r) for r in dev], [0.5, 0.5], gold, fold),
                               atol=1e-6)  # the record keeps 6 decimals
    metrics = json.loads((root / "ensemble-kall-seed1" / "metrics.json").read_text())
    assert metrics["dev"]["accuracy"] == pytest.approx(np.mean([r["prediction"] == r["label"] for r in ens_dev]))
    assert "dev_kept_checkpoint" in metrics  # the whole-dev temperatures' own dev score, beside it


def test_a_changed_member_makes_a_finished_ensemble_stale(tmp_path, tiny_bert_dir):
    path = sweep_file(tmp_path, tiny_bert_dir, MEMBERS + [{"name": "ensemble", "settings": {"members": ["head", "bitfit"]}}])
    root = run_sweep(load_experiment(path)).root
    shutil.rmtree(root / "bitfit-kall-seed1")
    with pytest.raises(ConfigError, match="ensemble-kall-seed1: the cell it read, bitfit-kall-seed1, is not finished"):
        run_sweep(load_experiment(path))


def test_a_member_without_dev_outputs_fails_its_ensemble_with_the_fix(tmp_path, tiny_bert_dir):
    path = sweep_file(tmp_path, tiny_bert_dir, MEMBERS + [{"name": "ensemble", "settings": {"members": ["head", "bitfit"]}}])
    _, cells = plan_sweep(load_experiment(path))
    root = tmp_path / "runs" / "tiny"
    from tunelab.sweep.cell import run_cell_here

    for cell in cells[:2]:
        assert run_cell_here(cell.meta(), root, str(path))
    (root / "head-kall-seed1" / "dev_predictions.jsonl").unlink()  # as a cell finished by an older tunelab
    assert not run_cell_here(cells[2].meta(), root, str(path))
    failure = json.loads((root / "ensemble-kall-seed1.failed.json").read_text())
    assert "has no dev_predictions.jsonl" in failure["message"] and "delete that cell directory" in failure["message"]


def test_a_saved_ensemble_predicts_new_text_from_its_members_models(tmp_path, tiny_bert_dir, capsys):
    path = sweep_file(tmp_path, tiny_bert_dir, MEMBERS + [{"name": "ensemble", "settings": {"members": ["head", "bitfit"]}}],
                      save_artifacts=True)
    root = run_sweep(load_experiment(path)).root
    new = write_jsonl(tmp_path / "new.jsonl", [{"text": "good great fine"}, {"text": "awful dull poor"}])
    outputs = {}
    for cell in ("head-kall-seed1", "bitfit-kall-seed1", "ensemble-kall-seed1"):
        capsys.readouterr()
        assert main(["predict", str(root / cell), "--data", str(new)]) == 0
        outputs[cell] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    temperatures = json.loads((root / "ensemble-kall-seed1" / "ensemble.json").read_text())["temperatures"]
    head, bitfit, ensemble = (distributions(rows) for rows in outputs.values())
    expected = (temper(head, temperatures[0]) + temper(bitfit, temperatures[1])) / 2  # the temperatures fitted in the sweep
    np.testing.assert_allclose(ensemble, expected, rtol=1e-6)


@pytest.mark.parametrize("strategies,expected", [
    ([{"name": "ensemble", "settings": {"members": ["head", "bitfit"]}}] + MEMBERS, "must be an entry listed before"),
    (MEMBERS + [{"name": "ensemble", "settings": {"members": ["head", "nowhere"]}}], "'nowhere' names no earlier entry"),
    ([{"name": "head", "search": {"train.learning_rate": [0.1, 0.01]}}, MEMBERS[1],
      {"name": "ensemble", "settings": {"members": ["head", "bitfit"]}}], "reads one model per entry"),
    (MEMBERS + [{"name": "ensemble", "settings": {"members": ["head"]}}], "members"),
    (MEMBERS + [{"name": "ensemble", "settings": {"members": ["head", "bitfit"], "weights": [1.0]}}], "one each"),
])
def test_bad_member_lists_exit_2_before_any_cell(tmp_path, tiny_bert_dir, capsys, strategies, expected):
    path = sweep_file(tmp_path, tiny_bert_dir, strategies)
    assert main(["compare", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "exp.yaml" in err
    assert not (tmp_path / "runs" / "tiny").exists()


def test_an_ensemble_outside_a_sweep_exits_2(tmp_path, tiny_bert_dir, capsys):
    data = {split: str(write_jsonl(tmp_path / f"{split}.jsonl", sentiment_rows(6))) for split in ("train", "test")}
    exp = experiment_yaml(tmp_path / "e.yaml", tiny_bert_dir, data, {"name": "ensemble", "members": ["a", "b"]})
    assert main(["run", str(exp), "--out", str(tmp_path / "e")]) == 2
    assert "runs in a sweep" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_ray_submits_an_ensemble_only_after_all_its_members_ended(tmp_path):
    cells = [Cell("a", "a", "head", "f", 2, 1, None), Cell("b", "b", "bitfit", "f", 2, 1, None),
             Cell("ens", "ens", "ensemble", "e", 2, 1, None, after=("a", "b"))]
    done, events = run_on_fake_ray(cells, tmp_path)
    assert sorted(done) == ["a", "b", "ens"]
    assert events.index(("submit", "ens")) > max(events.index(("end", "a")), events.index(("end", "b")))


def test_an_ensemble_finished_uncalibrated_by_an_older_tunelab_is_refused_with_the_fix(tmp_path, tiny_bert_dir):
    """An entry with its own `id:` too: the strategy is known by its method, not by the entry's name."""
    entry = {"name": "ensemble", "id": "both", "settings": {"members": ["head", "bitfit"]}}
    path = sweep_file(tmp_path, tiny_bert_dir, MEMBERS + [entry])
    root = run_sweep(load_experiment(path)).root
    assert run_sweep(load_experiment(path)).ran == 0  # resumes: nothing to run
    costs_file = root / "both-kall-seed1" / "costs.json"
    costs = json.loads(costs_file.read_text())
    del costs["member_temperatures"]  # as an ensemble cell finished before members were calibrated
    costs_file.write_text(json.dumps(costs))
    with pytest.raises(ConfigError, match="both-kall-seed1: it averaged its members uncalibrated.*delete it"):
        run_sweep(load_experiment(path))
