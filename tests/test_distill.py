"""`distill` on tiny random models: the student learns the teacher's soft labels and nothing else (gold
labels scrambled → the same student), the pool leaves dev out, a sweep runs the teacher's cell first and
the report shows both rows; bad teachers exit 2."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import experiment_yaml, run_on_fake_ray, write_jsonl
from tunelab.cli import main
from tunelab.config import load_experiment, validate_experiment
from tunelab.data import Splits
from tunelab.data.pool import unlabelled_pool
from tunelab.errors import ConfigError
from tunelab.methods import get_strategy
from tunelab.methods.distill import SoftTargetModel, distribution, soften
from tunelab.sweep import plan_sweep, run_sweep

WORDS = {"positive": ["good", "fine", "great", "nice", "lovely"], "negative": ["bad", "awful", "poor", "dull", "terrible"]}


def sentiment_rows(count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        label = ["negative", "positive"][i % 2]
        rows.append({"text": " ".join(rng.choice(WORDS[label]) for _ in range(3)) + f" {i}", "label": label})
    return rows


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, tiny_bert_dir) -> Path:
    """A finished `head` run on the tiny task: the teacher of the tests below."""
    tmp = tmp_path_factory.mktemp("teacher")
    rows = sentiment_rows(12)
    data = {split: str(write_jsonl(tmp / f"{split}.jsonl", rows)) for split in ("train", "dev", "test")}
    exp = experiment_yaml(tmp / "teacher.yaml", tiny_bert_dir, data, {"name": "head"}, train={"learning_rate": 1e-2})
    assert main(["run", str(exp), "--out", str(tmp / "run")]) == 0
    return tmp / "run"


def distill_strategy(tiny_bert_dir, train_file: str, teacher: Path, **settings):
    config = validate_experiment({
        "model": {"name": str(tiny_bert_dir), "max_length": 32},
        "task": {"type": "classification", "label_names": ["negative", "positive"]},
        "data": {"train": train_file},
        "strategy": {"name": "distill", "teacher": str(teacher), **settings},
        "train": {"epochs": 2, "batch_size": 4, "learning_rate": 1e-3, "progress_bar": False, "log_to": [], "seed": 5},
    })
    info = get_strategy("distill")
    strategy = info.cls(info.cls.Settings(teacher=str(teacher), **settings), config, ["negative", "positive"])
    strategy.check()
    return strategy


def scrambled(rows: list[dict], seed: int) -> list[dict]:
    labels = [r["label"] for r in rows]
    random.Random(seed).shuffle(labels)
    return [dict(r, label=("positive" if label == "negative" else "negative")) for r, label in zip(rows, labels)]


def test_student_is_trained_only_on_teacher_labels(tmp_path, tiny_bert_dir, teacher_run):
    rows = sentiment_rows(30, seed=1)
    train, dev, rest = rows[:4], rows[4:8], rows[8:]
    students = []
    for name, gold in (("gold", rows), ("scrambled", scrambled(rows, 3))):
        train_file = str(write_jsonl(tmp_path / f"{name}.jsonl", gold))
        strategy = distill_strategy(tiny_bert_dir, train_file, teacher_run, pool_size=16, temperature=2.0)
        splits = Splits(train=gold[:4], dev=dev, test=[], label_names=["negative", "positive"])  # dev: gold, model choice only
        predictor, costs = strategy.fit(splits, tmp_path / name)
        assert costs["teacher_pool"] == 16 and costs["teacher_examples"] == 20 and costs["steps"] > 0
        assert set(costs["held_out_dev"]) == set(costs["best_dev"]) - {"loss", "runtime", "samples_per_second",
                                                                       "steps_per_second", "epoch"}  # 2 epochs: held out
        students.append({k: v.clone() for k, v in predictor.model.state_dict().items()})
    # the pool's and the K-shot train split's gold labels changed; the student did not, bit for bit
    assert students[0].keys() == students[1].keys()
    assert all(torch.equal(students[0][k], students[1][k]) for k in students[0])

    # ... while the teacher's labels do move it: the test could fail
    flipped = distill_strategy(tiny_bert_dir, str(tmp_path / "gold.jsonl"), teacher_run, pool_size=16, temperature=2.0)
    original = flipped.teacher_targets
    flipped.teacher_targets = lambda directory, texts: [p[::-1] for p in original(directory, texts)]
    predictor, _ = flipped.fit(Splits(train=rows[:4], dev=dev, test=[], label_names=["negative", "positive"]), tmp_path / "f")
    assert any(not torch.equal(students[0][k], v) for k, v in predictor.model.state_dict().items())
    assert not {r["text"] for r in rest} - {r["text"] for r in rows}  # (the rest is where the pool comes from)


def test_pool_reads_text_only_and_leaves_the_k_shot_splits_out(tmp_path):
    rows = sentiment_rows(20) + [{"text": "no label at all"}]  # a pool record needs no label
    train_file = str(write_jsonl(tmp_path / "train.jsonl", rows))
    config = validate_experiment({"data": {"train": train_file}})
    pool = unlabelled_pool(config.data, config.task, rows[:6], 100, seed=1)
    assert {p["text"] for p in pool} == {r["text"] for r in rows[6:]}
    assert all("label" not in p for p in pool)  # dropped as each record is read
    drawn = unlabelled_pool(config.data, config.task, rows[:6], 5, seed=1)
    assert len(drawn) == 5 and drawn == unlabelled_pool(config.data, config.task, rows[:6], 5, seed=1)
    assert drawn != unlabelled_pool(config.data, config.task, rows[:6], 5, seed=2)


def test_soft_targets_and_the_distillation_loss():
    assert soften([0.2, 0.8], 1.0) == pytest.approx([0.2, 0.8])
    warm = soften([0.2, 0.8], 4.0)
    assert 0.5 < warm[1] < 0.8 and sum(warm) == pytest.approx(1.0)  # flatter, same order
    assert distribution({"prediction": "b", "scores": {"a": 0.25, "b": 0.75}}, ["a", "b"]) == pytest.approx([0.25, 0.75])
    assert distribution({"prediction": "b", "scores": {"a": -3.0, "b": -1.0}}, ["a", "b"]) == pytest.approx(
        torch.tensor([-3.0, -1.0]).softmax(-1).tolist())  # log-probabilities or logits: softmax
    assert distribution({"prediction": "b"}, ["a", "b"]) == [0.0, 1.0]

    class Fixed(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            return type("Out", (), {"logits": torch.tensor([[1.0, 3.0], [0.0, 0.0]])})()

    t, target = 2.0, torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    loss = SoftTargetModel(Fixed(), t)(torch.zeros(2, 3, dtype=torch.long), teacher_probs=target).loss
    student = torch.tensor([[1.0, 3.0], [0.0, 0.0]]).div(t).softmax(-1)
    expected = (target * (target / student).log()).sum(-1).mean() * t * t  # T² · KL(p_T ‖ q_T), batch mean
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def sweep_file(tmp_path, tiny_bert_dir, strategies: list, **extra) -> Path:
    held_out = [dict(row, text=row["text"] + " held out") for row in sentiment_rows(8, seed=5)]  # never in the pool
    data = {"train": str(write_jsonl(tmp_path / "train.jsonl", sentiment_rows(24)))}
    data.update({split: str(write_jsonl(tmp_path / f"{split}.jsonl", held_out)) for split in ("dev", "test")})
    path = experiment_yaml(tmp_path / "exp.yaml", tiny_bert_dir, data, {"name": "head"})
    raw = yaml.safe_load(path.read_text())
    raw["train"].update(epochs=1)
    raw["data"].update(k_shot=2)
    raw["output_dir"] = str(tmp_path / "runs")
    raw["sweep"] = {"isolation": "none", "seeds": [1, 2], "strategies": strategies, **extra}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_a_sweep_distils_each_teacher_cell_and_reports_both_rows(tmp_path, tiny_bert_dir, capsys):
    path = sweep_file(tmp_path, tiny_bert_dir, ["head", {"name": "distill", "id": "student", "settings": {
        "teacher": "head", "pool_size": 6, "train": "head"}}])
    _, cells = plan_sweep(load_experiment(path))
    students = [c for c in cells if c.strategy == "student"]
    assert [(c.after, c.config["strategy"]["teacher_cell"]) for c in students] == [
        (("head-k2-seed1",), "head-k2-seed1"), (("head-k2-seed2",), "head-k2-seed2")]
    one_seed = ["sweep.seeds=[2]"]  # (the run itself: one seed is enough)
    outcome = run_sweep(load_experiment(path, one_seed))
    assert outcome.failed == [] and outcome.ran == 2
    root = outcome.root
    costs = json.loads((root / "student-k2-seed2" / "costs.json").read_text())
    assert costs["teacher"] == "head-k2-seed2" and costs["teacher_pool"] == 6 and costs["eval_examples_per_second"] > 0
    assert main(["report", str(root)]) == 0
    import csv

    with open(root / "leaderboard.csv", encoding="utf-8") as handle:
        board = {row["strategy"]: row for row in csv.DictReader(handle)}
    assert set(board) == {"head", "student"}  # the teacher's row beside the student's, speed and all
    assert all(float(row["eval_examples_per_second"]) > 0 and row["accuracy_mean"] for row in board.values())
    section = (root / "report.md").read_text().split("## Distillation", 1)[1].split("\n## ", 1)[0]
    student_line = next(line for line in section.splitlines() if line.startswith("| student-k2 "))
    assert "| head-k2 |" in student_line and "×" in student_line  # the teacher named, the speed-up computed
    # resume: nothing to do; a removed student cell re-runs alone, from the finished teacher cell
    assert run_sweep(load_experiment(path, one_seed)).ran == 0
    shutil.rmtree(root / "student-k2-seed2")
    again = run_sweep(load_experiment(path, one_seed))
    assert (again.ran, again.failed) == (1, [])
    # a teacher cell removed (to re-run it) leaves its finished student stale: refused, nothing run or removed
    shutil.rmtree(root / "head-k2-seed2")
    with pytest.raises(ConfigError, match="student-k2-seed2: the cell it read, head-k2-seed2, is not finished"):
        run_sweep(load_experiment(path, one_seed))
    assert (root / "student-k2-seed2" / "metrics.json").is_file()
    shutil.rmtree(root / "student-k2-seed2")
    assert (run_sweep(load_experiment(path, one_seed)).ran, (root / "student-k2-seed2").is_dir()) == (2, True)
    later = (root / "student-k2-seed2" / "metrics.json").stat().st_mtime + 60
    os.utime(root / "head-k2-seed2" / "metrics.json", (later, later))  # the teacher finished again since
    with pytest.raises(ConfigError, match="finished again after it"):
        run_sweep(load_experiment(path, one_seed))


def test_an_ensemble_entry_teaches_a_student(tmp_path, tiny_bert_dir):
    """The model a user deploys from an ensemble of strategies: one student learns the ensemble's averaged
    (calibrated) label distribution, read through the ensemble cell's saved members."""
    from tunelab.data.pool import text_only
    from tunelab.run import load_predictor, read_run

    path = sweep_file(tmp_path, tiny_bert_dir, [
        "head", {"name": "bitfit", "train": {"learning_rate": 0.05}},
        {"name": "ensemble", "id": "both", "settings": {"members": ["head", "bitfit"]}},
        {"name": "distill", "id": "student", "settings": {"teacher": "both", "pool_size": 6, "train": "head"}}],
        seeds=[2])
    outcome = run_sweep(load_experiment(path))
    assert (outcome.ran, outcome.failed) == (4, [])
    root = outcome.root
    costs = json.loads((root / "student-k2-seed2" / "costs.json").read_text())
    assert costs["teacher"] == "both-k2-seed2" and costs["teacher_pool"] == 6
    texts = [text_only(row, load_experiment(path).task) for row in sentiment_rows(4, seed=9)]
    strategy = distill_strategy(tiny_bert_dir, str(tmp_path / "train.jsonl"), root / "both-k2-seed2")
    taught = strategy.teacher_targets(root / "both-k2-seed2", texts)
    alone = [strategy.teacher_targets(root / f"{member}-k2-seed2", texts) for member in ("head", "bitfit")]
    assert all(taught != member for member in alone)  # the ensemble's distribution, not one member's
    assert all(abs(sum(p) - 1) < 1e-5 for p in taught)
    for cell in ("head", "bitfit", "both"):
        shutil.rmtree(root / f"{cell}-k2-seed2")
    student = load_predictor(read_run(root / "student-k2-seed2")[1], root / "student-k2-seed2")
    assert len(student.predict(texts)) == 4  # the student stands alone: its teachers' cells are gone


def test_a_missing_teacher_cell_fails_its_student_clearly_and_a_rerun_recovers(tmp_path, tiny_bert_dir):
    path = sweep_file(tmp_path, tiny_bert_dir, ["head", {"name": "distill", "settings": {"teacher": "head", "pool_size": 2, "train": "head"}}],
                      seeds=[1])
    root = tmp_path / "runs" / "tiny"
    _, cells = plan_sweep(load_experiment(path))
    from tunelab.sweep.cell import run_cell_here

    assert not run_cell_here(cells[1].meta(), root, str(path))  # the student alone, before its teacher
    failure = json.loads((root / "distill-k2-seed1.failed.json").read_text())
    assert "has not finished" in failure["message"]
    outcome = run_sweep(load_experiment(path))
    assert (outcome.ran, outcome.failed) == (2, [])


@pytest.mark.parametrize("strategies,expected", [
    ([{"name": "distill", "settings": {"teacher": "head"}}, "head"], "must be an entry listed before"),
    (["head", {"name": "distill", "settings": {"teacher": "nowhere"}}], "names no earlier entry"),
    ([{"name": "head", "search": {"train.learning_rate": [0.1, 0.01]}}, {"name": "distill", "settings": {"teacher": "head"}}],
     "reads one model per entry"),
    (["head", {"name": "distill", "settings": {"teacher": "head"}}], "sweep.save_artifacts is false"),
])
def test_bad_teachers_in_a_sweep_exit_2_before_any_cell(tmp_path, tiny_bert_dir, capsys, strategies, expected):
    path = sweep_file(tmp_path, tiny_bert_dir, strategies, save_artifacts="save_artifacts" not in expected)
    assert main(["compare", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert not (tmp_path / "runs" / "tiny").exists()


def test_a_teacher_of_another_task_exits_2(tmp_path, tiny_bert_dir, teacher_run, capsys):
    rows = [{"text": f"t {i}", "label": ["cold", "hot"][i % 2]} for i in range(6)]
    data = {split: str(write_jsonl(tmp_path / f"{split}.jsonl", rows)) for split in ("train", "test")}
    exp = experiment_yaml(tmp_path / "s.yaml", tiny_bert_dir, data, {"name": "distill", "teacher": str(teacher_run)},
                          task={"label_names": ["cold", "hot"]})
    assert main(["run", str(exp), "--out", str(tmp_path / "s")]) == 2
    assert "distil from a run of the same task" in capsys.readouterr().err
    strategy = distill_strategy(tiny_bert_dir, data["train"], teacher_run)
    strategy.experiment.train.label_smoothing = 0.1
    with pytest.raises(ConfigError, match="label_smoothing"):
        strategy.check()


def test_ray_submits_a_student_only_after_its_teacher_cell_ended(tmp_path):
    """The Ray executor holds a cell back until the cell it reads (`after`) has ended (a fake Ray: order only)."""
    from tunelab.sweep.expand import Cell

    cells = [Cell("head-s1", "head", "head", "f", 2, 1, None), Cell("student-s1", "student", "distill", "d", 2, 1, None,
             after=("head-s1",)), Cell("head-s2", "head", "head", "f", 2, 2, None),
             Cell("other", "student", "distill", "d", 2, 2, None, after=("finished-before",))]  # its teacher is not to run
    done, events = run_on_fake_ray(cells, tmp_path)
    assert sorted(done) == sorted(c.id for c in cells)
    assert events.index(("submit", "student-s1")) > events.index(("end", "head-s1"))
    assert events.index(("submit", "other")) < events.index(("end", "head-s1"))  # nothing to wait for: at once
