"""Continual learning (`tasks:` + `continual:`): one model trained on the tasks in their order,
evaluated on every task's test split before training and after each task (the accuracy matrix,
`continual_matrix`), with sequential fine-tuning, replay, EWC or LwF (`forgetting`).

The model is the strategy's classifier over the union label space, a head per task as disjoint
rows of its output layer with the other tasks' logits masked (`task_heads`: the task-incremental
setting, the task id is known at test time). Any classification-head strategy that trains works:
head, full, partial, bitfit, adapter, the PEFT methods; each task is one `train_model` call on the
same model (a new optimizer per task), keeping that task's best dev epoch.

`run.prepare` hands continual experiments here; what it returns runs through `run.execute` like a
single run, so a sweep cell with a `continual:` override is an ordinary cell.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tunelab.config import ExperimentConfig, validate_settings
from tunelab.data.validate import CLASSIFICATION
from tunelab.errors import ConfigError
from tunelab.metrics import compute_metrics
from tunelab.training.continual_matrix import transfer
from tunelab.training.forgetting import ContinualLoss, EwcState, draw_buffer, fisher_diagonal
from tunelab.training.task_heads import (TaskLabels, TaskMaskedModel, build_masked_model, encode_task_examples,
                                         predict_task, union_labels)
from tunelab.training.tasks import TaskRun, load_task_splits, task_experiments


@dataclass
class ContinualSplits:
    """All tasks' splits side by side (what `run.execute` counts); the tasks keep their own."""

    train: list[dict]
    dev: list[dict]
    test: list[dict]


# ---------------------------------------------------------------------------------------------
# Checks (before any weights load)


def prepare_continual(config: ExperimentConfig):
    """Every check of a continual experiment, data loaded, no weights: a `run.Prepared`."""
    from tunelab.methods import get_strategy
    from tunelab.methods.classifier import ClassifierStrategy
    from tunelab.metrics import get_metric
    from tunelab.model_checks import check_model
    from tunelab.run import Prepared, located

    info = located(config, ("strategy", "name"), lambda: get_strategy(config.strategy.name))
    if not issubclass(info.cls, ClassifierStrategy):
        raise ConfigError(f"{config.locate('strategy', 'name')}: strategy '{config.strategy.name}' does not train a "
                          f"classification head; continual learning trains one model on the tasks in turn: use head, "
                          f"full, partial, bitfit, adapter or a PEFT method (lora, ia3, ...)")
    settings = validate_settings(info.cls.Settings, config.strategy.options(), ("strategy",), config.source, config.lines)
    check_method_settings(config.continual, lambda key: config.locate("continual", key))
    check_combinations(config)
    tasks = task_experiments(config)
    for index, run in enumerate(tasks):
        check_task(config, index, run)
        located(run.experiment, ("metrics",), lambda: [get_metric(name) for name in run.experiment.metrics])
    model_checked = check_model(config)
    load_task_splits(tasks, config.train.seed)
    for index, run in enumerate(tasks):
        if not run.splits.test:
            raise ConfigError(f"{config.locate('tasks', index, 'data')}: tasks.{index} ({run.name}): no data.test; "
                              f"every task is evaluated after every task, so each needs a test split (a file, or "
                              f"data.test_fraction to hold part of its data.train out)")
    check_buffer(config, tasks)
    task_labels = union_labels(tasks)
    strategy = info.cls(settings, config, task_labels.names)
    strategy.check()
    splits = ContinualSplits(*([e for run in tasks for e in getattr(run.splits, part)] for part in ("train", "dev", "test")))
    splits.dev = []  # each task picks its best epoch on its own dev split; there is no sweep-level dev score
    return Prepared(config, ContinualStrategy(strategy, tasks, task_labels), splits, model_checked, write=write_continual)


def check_method_settings(settings, locate, prefix: str = "continual") -> None:
    """A setting of another method than the chosen one is an error (`locate(key)` says where it was set)."""
    for key, owner in settings.misplaced():
        raise ConfigError(f"{locate(key)}: {prefix}.{key} is a setting of method {owner}, not of {settings.method}; "
                          f"remove it or set method: {owner}")


def check_combinations(config: ExperimentConfig) -> None:
    """Training options that change the Trainer's loss or data, which the continual loop does not carry."""
    method, train = config.continual.method, config.train
    if method in ("ewc", "lwf"):
        for key in ("label_smoothing", "rdrop_alpha"):
            if getattr(train, key, None):
                raise ConfigError(f"{config.locate('train', key)}: train.{key} replaces the model's loss, which "
                                  f"carries continual.method {method}'s penalty; remove one of the two")
    for key in ("augment", "adversarial"):
        if getattr(train, key, None) is not None:
            raise ConfigError(f"{config.locate('train', key)}: train.{key} is not supported with `continual:` yet; "
                              f"remove it (or run the tasks as single experiments)")


def check_task(config: ExperimentConfig, index: int, run: TaskRun) -> None:
    kind = run.experiment.task.type
    if kind not in CLASSIFICATION:
        raise ConfigError(f"{config.locate('tasks', index, 'task', 'type')}: tasks.{index} ({run.name}): task.type "
                          f"{kind}; continual learning trains a classification head per task, so every task must be "
                          f"classification or pair_classification")


def check_buffer(config: ExperimentConfig, tasks: list[TaskRun]) -> None:
    """Replay keeps `buffer_size` examples of every task but the last: each must have that many."""
    if config.continual.method != "replay":
        return
    size = config.continual.buffer_size
    for run in tasks[:-1]:
        if size > len(run.splits.train):
            raise ConfigError(f"{config.locate('continual', 'buffer_size')}: continual.buffer_size {size} is larger "
                              f"than the training split of task '{run.name}' ({len(run.splits.train)} examples after "
                              f"K-shot sampling); choose at most {min(len(r.splits.train) for r in tasks[:-1])}")


# ---------------------------------------------------------------------------------------------
# Training on the tasks in turn


class ContinualStrategy:
    """`fit` trains one model on the tasks in order and fills the accuracy matrix as it goes."""

    def __init__(self, inner, tasks: list[TaskRun], task_labels: TaskLabels):
        self.inner, self.tasks, self.task_labels = inner, tasks, task_labels
        self.experiment = inner.experiment

    def fit(self, splits, run_dir: Path):
        from tunelab.methods.classifier import train_costs

        loaded, model, costs = build_masked_model(self.inner, self.task_labels)
        learner = Learner(self, model, loaded.tokenizer)
        rows, outputs = [learner.evaluate()[0]], None
        per_task = []
        for index, run in enumerate(self.tasks):
            stats = learner.learn(index, Path(run_dir) / "tasks" / run.name)
            row, outputs = learner.evaluate()
            rows.append(row)
            per_task.append({"task": run.name, **train_costs(stats, model)})
        costs["tasks"] = per_task
        for key in ("train_seconds", "train_tokens", "steps"):
            costs[key] = sum(t[key] for t in per_task)
        costs["peak_memory_mb"] = max(t["peak_memory_mb"] for t in per_task)
        costs["eval_seconds"] = learner.eval_seconds  # T + 1 evaluations of every task's test split
        costs["eval_examples_per_second"] = learner.eval_examples / max(learner.eval_seconds, 1e-9)
        return ContinualPredictor(self, model.model, loaded, rows, outputs), costs


class Learner:
    """The model, its tokenizer and the method's state across tasks (replay buffer, EWC's Fisher)."""

    def __init__(self, strategy: ContinualStrategy, model: TaskMaskedModel, tokenizer):
        self.strategy, self.model, self.tokenizer = strategy, model, tokenizer
        self.settings = strategy.experiment.continual
        self.ewc = EwcState(self.settings.ewc_lambda) if self.settings.method == "ewc" else None
        self.buffer: list[dict] = []
        self.eval_seconds, self.eval_examples = 0.0, 0

    def encode(self, examples: list[dict], index: int) -> list[dict]:
        return encode_task_examples(self.tokenizer, examples, index, self.strategy.task_labels,
                                    self.strategy.experiment.model.max_length)

    def learn(self, index: int, out_dir: Path):
        from tunelab.train import train_model

        exp, run = self.strategy.experiment, self.strategy.tasks[index]
        features = self.encode(run.splits.train, index)
        lwf_heads = [slice(r.start, r.stop) for r in map(self.strategy.task_labels.rows, range(index))]
        if self.settings.method == "lwf" and index:
            record_logits(self.model.model, self.tokenizer, features, exp.train.eval_batch_size)
        wrapped = ContinualLoss(self.model, self.ewc, self.settings.lwf_alpha if self.settings.method == "lwf" else 0.0,
                                lwf_heads, self.settings.lwf_temperature)
        metric = run.experiment.train.metric_for_best or run.experiment.metrics[0]
        stats = train_model(wrapped, self.tokenizer, features + self.buffer, self.encode(run.splits.dev, index),
                            exp.train, out_dir, score_dev=lambda logits, ids: self.score_dev(index, logits, ids),
                            metric_for_best=metric)
        if index < len(self.strategy.tasks) - 1:  # nothing trains after the last task: no buffer, no Fisher
            self.remember(index, run, features)
        return stats

    def remember(self, index: int, run: TaskRun, features: list[dict]) -> None:
        """After task `index`: its replay buffer, or its Fisher information."""
        seed = self.strategy.experiment.train.seed
        if self.settings.method == "replay":
            self.buffer += self.encode(draw_buffer(run.splits.train, self.settings.buffer_size, seed, run.name), index)
        if self.ewc is not None:
            count = self.settings.fisher_samples or len(features)
            chosen = draw_buffer(features, min(count, len(features)), seed, f"fisher:{run.name}")
            self.ewc.consolidate(self.model, fisher_diagonal(self.model, one_example_batches(self.model, self.tokenizer, chosen)))

    def score_dev(self, index: int, logits, label_ids) -> dict:
        logits = logits[0] if isinstance(logits, tuple) else logits
        run, labels = self.strategy.tasks[index], self.strategy.task_labels
        start, names = labels.offsets[index], labels.labels[index]
        predictions = [names[i - start] for i in logits.argmax(-1)]  # other tasks' rows are masked
        references = [names[i - start] for i in label_ids]
        return compute_metrics(run.experiment.metrics, predictions, references, labels=names)

    def evaluate(self) -> tuple[list[float], list[dict]]:
        """(main metric per task, every task's test outputs with their metrics)."""
        exp, row, outputs = self.strategy.experiment, [], []
        started = time.perf_counter()
        for index, run in enumerate(self.strategy.tasks):
            preds = predict_task(self.model, self.tokenizer, run.splits.test, index, exp.model.max_length,
                                 exp.train.eval_batch_size)
            metrics = compute_metrics(run.experiment.metrics, [p["prediction"] for p in preds],
                                      [e["label"] for e in run.splits.test], labels=run.experiment.task.label_names)
            row.append(metrics[run.experiment.metrics[0]])
            outputs.append({"task": run.name, "metrics": metrics, "predictions": preds})
            self.eval_examples += len(preds)
        self.eval_seconds += time.perf_counter() - started
        return row, outputs


def one_example_batches(model: torch.nn.Module, tokenizer, features: list[dict]):
    from transformers import DataCollatorWithPadding

    collate, device = DataCollatorWithPadding(tokenizer), next(model.parameters()).device
    for feature in features:
        yield {k: v.to(device) for k, v in collate([feature]).items()}


def record_logits(model: torch.nn.Module, tokenizer, features: list[dict], batch_size: int) -> None:
    """LwF: each feature gets `lwf_logits`, the unmasked logits (L_total,) of the model as it is now."""
    from transformers import DataCollatorWithPadding

    from tunelab.batching import by_length

    collate, device = DataCollatorWithPadding(tokenizer), next(model.parameters()).device
    keys = ("input_ids", "attention_mask", "token_type_ids")

    def run(chunk: list[dict]) -> list[list[float]]:
        batch = collate([{k: f[k] for k in keys if k in f} for f in chunk])
        return model(**{k: v.to(device) for k, v in batch.items()}).logits.float().tolist()

    was_training = model.training
    model.eval()
    with torch.inference_mode():
        logits = by_length(features, lambda f: len(f["input_ids"]), batch_size, run)
    model.train(was_training)
    for feature, row in zip(features, logits):
        feature["lwf_logits"] = row


# ---------------------------------------------------------------------------------------------
# Results


class ContinualPredictor:
    """The final model and what the run measured while training (the matrix, the last row's outputs)."""

    def __init__(self, strategy: ContinualStrategy, model, loaded, matrix: list[list[float]], outputs: list[dict]):
        self.strategy, self.model, self.loaded, self.matrix, self.outputs = strategy, model, loaded, matrix, outputs

    def predict(self, examples: list[dict]) -> list[dict]:
        raise NotImplementedError("a continual run predicts per task; its test outputs come from `fit`")

    def save(self, directory: Path) -> None:
        self.strategy.inner.save_artifact(self.model, directory, self.loaded)


def write_continual(prepared, predictor: ContinualPredictor, costs: dict, directory: Path) -> dict:
    """The run directory (`run.Prepared.write`): metrics.json's `test` is the mean over tasks of each
    metric of the final model (what `tunelab compare` ranks), `continual` the matrix and its transfer
    figures; tasks/<name>/ holds each task's final metrics and predictions."""
    from tunelab.config import dump_config
    from tunelab.run import CONFIG_FILE, COSTS_FILE, METRICS_FILE, PREDICTIONS_FILE, write_json, write_predictions
    from tunelab.training.multitask import mean_metrics

    measured = getattr(predictor, "inner", predictor)  # a sweep's ResultsOnly wraps it (save_artifacts: false)
    tasks = measured.strategy.tasks
    per_task = {out["task"]: out["metrics"] for out in measured.outputs}
    summary = {"method": prepared.config.continual.method, "tasks": [run.name for run in tasks],
               "metric": [run.experiment.metrics[0] for run in tasks], "matrix": measured.matrix,
               **transfer(measured.matrix), "per_task": per_task}
    result = {"test": mean_metrics(list(per_task.values())), "dev": {},
              "num_test": sum(len(r.splits.test) for r in tasks), "num_train": sum(len(r.splits.train) for r in tasks),
              "continual": summary}
    for run, out in zip(tasks, measured.outputs):
        task_dir = directory / "tasks" / run.name
        task_dir.mkdir(parents=True, exist_ok=True)
        write_json(task_dir / METRICS_FILE, {"test": out["metrics"], "num_test": len(run.splits.test)})
        write_predictions(task_dir / PREDICTIONS_FILE, run.splits.test, out["predictions"])
    predictor.save(directory)
    (directory / CONFIG_FILE).write_text(dump_config(prepared.config), encoding="utf-8")
    write_json(directory / METRICS_FILE, result)
    write_json(directory / COSTS_FILE, costs)
    write_predictions(directory / PREDICTIONS_FILE, [dict(e, task=r.name) for r in tasks for e in r.splits.test],
                      [p for out in measured.outputs for p in out["predictions"]])
    return result


def refuse_reuse(run_dir: Path) -> None:
    """`tunelab evaluate`/`predict`/`export` read one task's model; a continual run holds several heads."""
    from tunelab.errors import UserError

    raise UserError(f"{run_dir} is a continual-learning run (one model, a head per task); evaluate and predict do not "
                    f"read such a model yet: its accuracy matrix is in {Path(run_dir) / 'metrics.json'} and each "
                    f"task's final predictions in {Path(run_dir) / 'tasks'}/<task>/predictions.jsonl")
