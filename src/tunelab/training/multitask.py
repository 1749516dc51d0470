"""Multi-task fine-tuning (`tasks:` + `multitask:`): checks before any weights, and the results layout.

```yaml
tasks:
  - {name: sst2, data: {train: sst2/train.jsonl, test: sst2/test.jsonl}}
  - {name: mr, data: {train: mr/train.jsonl, test: mr/test.jsonl}}
multitask: {sampling: temperature, temperature: 2, joint: true, head: per_task}
strategy: {name: lora}        # any classification-head strategy
```

`joint: true` trains one shared model with a head per task (`task_heads`: disjoint rows of one output
layer, other tasks' logits masked per example), on an epoch mixed by `task_sampling`; `joint: false`
trains each task alone with the same strategy (the single-task baseline). Either way the run
directory holds:

    metrics.json      test / dev: the mean over tasks of every metric all tasks measure (what
                      `tunelab compare` ranks), num_test / num_train: sums over tasks,
                      tasks: {name: {test, dev, num_test, num_train}}, multitask: {joint, sampling, p}
    predictions.jsonl every task's test predictions, each row with its `task`
    tasks/<name>/     per task: metrics.json, predictions.jsonl; with joint: false also config.yaml and
                      the task's own model (so `tunelab evaluate RUN/tasks/<name>` works)
    the artifact      joint: the shared model over the union label space, and task_heads.json

Every check here runs before weights load: a bad entry exits 2 naming its key and line.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.config import ExperimentConfig, dump_config
from tunelab.data.validate import CLASSIFICATION
from tunelab.errors import ConfigError
from tunelab.training.task_heads import TaskLabels, union_labels
from tunelab.training.tasks import TaskRun, task_experiments

TASKS_DIR = "tasks"


@dataclass
class MultiSplits:
    """Every task's splits together; each example carries its task's index as `_task` (not written out)."""

    tasks: list[TaskRun]
    train: list[dict] = field(default_factory=list)
    dev: list[dict] = field(default_factory=list)
    test: list[dict] = field(default_factory=list)
    label_names: list[str] | None = None

    def __post_init__(self):
        for split in ("train", "dev", "test"):
            setattr(self, split, [dict(e, _task=i) for i, run in enumerate(self.tasks) for e in getattr(run.splits, split)])


def prepare_multitask(config: ExperimentConfig):
    """run.prepare for a multi-task experiment: each task prepared as its own single-task run (every
    single-task check, data loaded and K-shot sampled), then the multi-task checks."""
    from tunelab import run as run_module
    from tunelab.training.multitask_fit import JointStrategy, SeparateStrategy

    info = run_module.located(config, ("strategy", "name"), lambda: run_module.get_strategy(config.strategy.name))
    check_strategy(config, info)
    check_techniques(config)
    runs = task_experiments(config)
    for run in runs:
        check_task_type(run)
    prepared = [run_module.prepare(run.experiment) for run in runs]
    for run, one in zip(runs, prepared):
        run.splits = one.splits
    check_metrics(config, runs)
    if config.multitask.joint and info.name == "pet":
        from tunelab.training.multitask_pet import JointPetStrategy

        strategy = JointPetStrategy(config, runs, info)  # each task checked by its own pet in prepare above
    elif config.multitask.joint:
        labels = task_label_space(config, runs)
        strategy = JointStrategy(config, runs, info, labels)
        strategy.check()
    else:
        strategy = SeparateStrategy(config, runs, [one.strategy for one in prepared])
    return run_module.Prepared(config, strategy, MultiSplits(runs), all(one.model_checked for one in prepared),
                               write=write_multitask)


def check_strategy(config: ExperimentConfig, info) -> None:
    """Strategies that train a label read-out: the classification-head ones, and pet (a template per task)."""
    from tunelab.methods.classifier import ClassifierStrategy

    if info.name == "pet":
        from tunelab.training.multitask_pet import check_prompts

        if config.multitask.head == "shared":
            raise ConfigError(f"{config.locate('multitask', 'head')}: multitask.head: shared is a classification head "
                              f"shared by the tasks; pet reads each task's own label words: remove it")
        check_prompts(config)
    elif not issubclass(info.cls, ClassifierStrategy):
        raise ConfigError(
            f"{config.locate('strategy', 'name')}: multitask: strategy '{info.name}' does not train a label read-out; "
            f"multi-task runs support the head strategies (head, full, partial, bitfit, adapter, classifier, lora and "
            f"the other PEFT methods) and pet (a template and verbalizer per task)")


def check_techniques(config: ExperimentConfig) -> None:
    """Techniques not (yet) combined with one joint model are refused, not silently dropped (each task
    alone trains through the plain strategy, where they work; train.augment is refused for every
    multi-task run by augmentation's own check in run.prepare)."""
    if not config.multitask.joint:
        return
    train = config.train
    given = [("label_smoothing", bool(train.label_smoothing)), ("rdrop_alpha", bool(train.rdrop_alpha)),
             ("adversarial", train.adversarial is not None)]
    for key in [key for key, on in given if on][:1]:
        raise ConfigError(f"{config.locate('train', key)}: train.{key} is not supported with multitask.joint: true "
                          f"(the other tasks' logits are masked out); remove it or set multitask.joint: false")


def check_task_type(run: TaskRun) -> None:
    exp = run.experiment
    if exp.task.type not in CLASSIFICATION:
        raise ConfigError(f"{exp.locate('task', 'type')}: task.type={exp.task.type} in task '{run.name}': multi-task "
                          f"runs learn classification tasks (classification, pair_classification)")


def check_metrics(config: ExperimentConfig, runs: list[TaskRun]) -> None:
    """The metric runs are ranked by must be measured on every task (its mean is the run's figure)."""
    main = config.train.metric_for_best or config.metrics[0]
    for index, run in enumerate(runs):
        if main not in run.experiment.metrics:
            raise ConfigError(
                f"{run.experiment.locate('metrics')}: task '{run.name}' does not measure '{main}', the metric the "
                f"multi-task run is ranked and selected by (the mean over tasks); add it to tasks.{index}.metrics")


def task_label_space(config: ExperimentConfig, runs: list[TaskRun]):
    """The head's label space: rows per task, or (`head: shared`) one set of rows all tasks must share."""
    if config.multitask.head == "per_task":
        return union_labels(runs)
    first = runs[0].experiment.task.label_names
    for index, run in enumerate(runs[1:], start=1):
        names = run.experiment.task.label_names
        if set(names) != set(first):
            raise ConfigError(
                f"{run.experiment.locate('task', 'label_names')}: task '{run.name}' has labels {sorted(names)} but "
                f"'{runs[0].name}' has {sorted(first)}: with multitask.head: shared every task's labels clash in one head "
                f"unless the label sets are the same; use head: per_task (a head per task), or map the labels to one set")
    return SharedLabels([run.name for run in runs], [list(first) for _ in runs])


class SharedLabels(TaskLabels):
    """`head: shared`: every task reads the same rows (one head over the common label names); nothing is masked."""

    @property
    def offsets(self) -> list[int]:
        return [0 for _ in self.tasks]

    @property
    def total(self) -> int:
        return len(self.labels[0])

    @property
    def names(self) -> list[str]:
        return list(self.labels[0])


# ---------------------------------------------------------------------------------------------
# Results


def write_multitask(prepared, predictor, costs: dict, directory: Path) -> dict:
    """Predict every task's test split, score each with its own metrics, write the layout above."""
    from tunelab.run import (CONFIG_FILE, COSTS_FILE, METRICS_FILE, PREDICTIONS_FILE, score, write_json,
                             write_predictions)

    config, splits = prepared.config, prepared.splits
    started = time.perf_counter()
    outputs = predictor.predict(splits.test)
    costs["eval_seconds"] = time.perf_counter() - started
    costs["eval_examples_per_second"] = len(splits.test) / max(costs["eval_seconds"], 1e-9)
    per_task, task_dev = {}, costs.pop("task_dev", {})
    for index, run in enumerate(splits.tasks):
        rows = [i for i, e in enumerate(splits.test) if e["_task"] == index]
        examples, task_outputs = [splits.test[i] for i in rows], [outputs[i] for i in rows]
        per_task[run.name] = {"test": score(run.experiment, examples, task_outputs), "dev": task_dev.get(run.name, {}),
                              "num_test": len(examples), "num_train": len(run.splits.train)}
        task_dir = directory / TASKS_DIR / run.name
        task_dir.mkdir(parents=True, exist_ok=True)
        write_json(task_dir / METRICS_FILE, per_task[run.name])
        write_predictions(task_dir / PREDICTIONS_FILE, examples, task_outputs)
    result = {"test": mean_metrics([t["test"] for t in per_task.values()]),
              "dev": costs.get("best_dev") or mean_metrics([t["dev"] for t in per_task.values()]),
              "num_test": len(splits.test), "num_train": len(splits.train), "tasks": per_task,
              "multitask": sampling_summary(config, splits.tasks)}
    predictor.save(directory)
    (directory / CONFIG_FILE).write_text(dump_config(config), encoding="utf-8")
    write_json(directory / METRICS_FILE, result)
    write_json(directory / COSTS_FILE, costs)
    write_predictions(directory / PREDICTIONS_FILE, splits.test, outputs)
    return result


def mean_metrics(results: list[dict]) -> dict:
    """The mean over tasks of each scalar metric that every task reports (a metric only some tasks
    measure has no mean over all tasks, so it is left out: read it under `tasks`)."""
    if not results or not all(results):
        return {}
    shared = [k for k, v in results[0].items() if isinstance(v, (int, float)) and all(k in r for r in results)]
    return {k: sum(float(r[k]) for r in results) / len(results) for k in shared}


def sampling_summary(config: ExperimentConfig, runs: list[TaskRun]) -> dict:
    """How the run mixed its tasks: the settings, each task's training size n_i and its p_i."""
    from tunelab.training.task_sampling import task_probabilities

    cfg, names = config.multitask, [run.name for run in runs]
    sizes = [len(run.splits.train) for run in runs]
    return {"joint": cfg.joint, "head": cfg.head, "sampling": cfg.sampling, "temperature": cfg.temperature,
            "train_sizes": dict(zip(names, sizes)),
            "probabilities": dict(zip(names, task_probabilities(sizes, cfg.sampling, cfg.temperature)))}


def write_heads(directory: Path, task_labels, head: str) -> None:
    """`task_heads.json`: which rows of the saved output layer belong to which task."""
    rows = {task: list(task_labels.rows(i)) for i, task in enumerate(task_labels.tasks)}
    data = {"head": head, "tasks": task_labels.tasks, "labels": task_labels.labels, "rows": rows}
    (Path(directory) / "task_heads.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def refuse_reuse(config: ExperimentConfig, run_dir: Path) -> None:
    """`tunelab evaluate`/`predict`/`export` take one task's run directory, not a multi-task one."""
    from tunelab.errors import UserError

    names = ", ".join(entry.name for entry in config.tasks or [])
    if not config.multitask.joint:
        raise UserError(f"{run_dir} is a multi-task run with one model per task ({names}); evaluate or predict with "
                        f"one task's own run directory: {Path(run_dir) / TASKS_DIR}/<task>")
    raise UserError(f"{run_dir} is a multi-task run whose one model has a head per task ({names}); evaluate and "
                    f"predict do not read such a model yet: its per-task test results are in {Path(run_dir) / TASKS_DIR}"
                    f"/<task>/metrics.json and predictions.jsonl")
