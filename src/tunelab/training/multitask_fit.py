"""The two ways a multi-task run trains (see `multitask` for the config and the results layout).

- `JointStrategy` (`joint: true`): the experiment's classification strategy builds ONE model over the
  union label space (load_base, prepare = its model change, save = its artifact), wrapped in
  `task_heads.TaskMaskedModel`; it trains on an epoch mixed by `task_sampling` with the ordinary
  `train_model`, selecting the best epoch by the mean over tasks of the dev metric.
- `SeparateStrategy` (`joint: false`): each task's own single-task strategy fits its own model;
  the results are laid out the same way, so a sweep puts both side by side on the same seeds.

Both return a predictor whose `predict` takes examples tagged with `_task` (`multitask.MultiSplits`)
and answers in the same order, each output with its `task`.
"""

from __future__ import annotations

from pathlib import Path

from tunelab.config import ExperimentConfig, dump_config
from tunelab.errors import ConfigError
from tunelab.metrics import compute_metrics
from tunelab.training.multitask import TASKS_DIR, SharedLabels, mean_metrics, write_heads
from tunelab.training.task_sampling import mixture, task_probabilities


def by_task(examples: list[dict], count: int) -> list[list[int]]:
    """Positions of each task's examples in `examples` (tagged with `_task`)."""
    positions: list[list[int]] = [[] for _ in range(count)]
    for position, example in enumerate(examples):
        positions[example["_task"]].append(position)
    return positions


# ---------------------------------------------------------------------------------------------
# joint: true


class JointStrategy:
    """One shared model, a head per task (or one shared head), trained on the sampled mixture."""

    def __init__(self, config: ExperimentConfig, runs, info, task_labels):
        from tunelab.config import validate_settings

        self.config, self.runs, self.task_labels = config, runs, task_labels
        settings = validate_settings(info.cls.Settings, config.strategy.options(), ("strategy",), config.source,
                                     config.lines)
        # the shared model's sections (model, train) are the experiment's; its labels are the union's
        self.inner = info.cls(settings, runs[0].experiment, task_labels.names)

    def check(self) -> None:
        for run in self.runs:
            if not run.splits.train:
                raise ConfigError(f"{run.experiment.locate('data', 'train')}: task '{run.name}' has no training example")
        self.inner.check()

    def fit(self, splits, run_dir: Path):
        from tunelab.methods.classifier import train_costs
        from tunelab.train import train_model
        from tunelab.training.task_heads import build_masked_model

        exp = self.config
        loaded, model, costs = build_masked_model(self.inner, self.task_labels)
        stats = train_model(model, loaded.tokenizer, self.train_features(loaded.tokenizer),
                            self.encode(loaded.tokenizer, "dev"), exp.train, run_dir, score_dev=self.score_dev,
                            metric_for_best=exp.train.metric_for_best or exp.metrics[0])
        costs.update(train_costs(stats, model))
        predictor = JointPredictor(self, model, loaded)
        costs["task_dev"] = self.task_dev(predictor, splits)  # the restored best state, each task on its dev split
        return predictor, costs

    def task_dev(self, predictor, splits) -> dict:
        from tunelab.run import score

        outputs = predictor.predict(splits.dev)
        return {run.name: score(run.experiment, [e for e in splits.dev if e["_task"] == i],
                                [o for e, o in zip(splits.dev, outputs) if e["_task"] == i])
                for i, run in enumerate(self.runs) if run.splits.dev}

    def encode(self, tokenizer, split: str) -> list[list[dict]] | list[dict]:
        from tunelab.training.task_heads import encode_task_examples

        max_length = self.config.model.max_length
        per_task = [encode_task_examples(tokenizer, getattr(run.splits, split), i, self.task_labels, max_length)
                    for i, run in enumerate(self.runs)]
        return [f for features in per_task for f in features] if split == "dev" else per_task

    def train_features(self, tokenizer) -> list[dict]:
        """One epoch: Σ n_i examples, each task drawn with its p_i (task_sampling)."""
        per_task = self.encode(tokenizer, "train")
        sizes = [len(features) for features in per_task]
        cfg = self.config.multitask
        order = mixture(sizes, task_probabilities(sizes, cfg.sampling, cfg.temperature), sum(sizes),
                        self.config.train.seed)
        return [per_task[task][index] for task, index in order]

    def score_dev(self, logits, label_ids) -> dict:
        """Each task's metrics on its dev examples and their mean (what selects the best epoch); with
        `head: shared` the rows are the same for every task: all dev examples pooled."""
        logits = logits[0] if isinstance(logits, tuple) else logits
        if isinstance(self.task_labels, SharedLabels):
            names = self.task_labels.names
            return compute_metrics(self.config.metrics, [names[i] for i in logits.argmax(-1)],
                                   [names[i] for i in label_ids], labels=names)
        return score_by_rows(self.runs, self.task_labels, logits, label_ids)


def score_by_rows(runs, task_labels, logits, label_ids) -> dict:
    """The mean over tasks of each task's dev metrics. The Trainer may reorder dev examples (length
    grouping), so a row's task is read from its label id (the rows of the union space are disjoint)."""
    results = {}
    for index, run in enumerate(runs):
        rows, names = task_labels.rows(index), task_labels.labels[index]
        mine = (label_ids >= rows.start) & (label_ids < rows.stop)
        chunk = logits[mine][:, rows.start : rows.stop]  # (n_dev_task, L_task)
        references = [names[i - rows.start] for i in label_ids[mine]]
        predictions = [names[i] for i in chunk.argmax(-1)]
        results[run.name] = compute_metrics(run.experiment.metrics, predictions, references, labels=names)
    return mean_metrics(list(results.values()))


class JointPredictor:
    def __init__(self, strategy: JointStrategy, model, loaded):
        self.strategy, self.model, self.loaded = strategy, model, loaded

    def predict(self, examples: list[dict]) -> list[dict]:
        from tunelab.training.task_heads import predict_task

        strategy, outputs = self.strategy, [None] * len(examples)
        for index, positions in enumerate(by_task(examples, len(strategy.runs))):
            if not positions:
                continue
            answers = predict_task(self.model, self.loaded.tokenizer, [examples[p] for p in positions], index,
                                   strategy.config.model.max_length, strategy.config.train.eval_batch_size)
            for position, answer in zip(positions, answers):
                outputs[position] = dict(answer, task=strategy.runs[index].name)
        return outputs

    def save(self, directory: Path) -> None:
        self.strategy.inner.save_artifact(self.model.model, directory, self.loaded)
        write_heads(directory, self.strategy.task_labels, self.strategy.config.multitask.head)


# ---------------------------------------------------------------------------------------------
# joint: false


ADDITIVE_COSTS = ("trainable_params", "total_params", "train_seconds", "train_tokens", "steps")


class SeparateStrategy:
    """Each task alone: its own single-task strategy, its own model (under tasks/<name>/)."""

    def __init__(self, config: ExperimentConfig, runs, strategies: list):
        self.config, self.runs, self.strategies = config, runs, strategies

    def fit(self, splits, run_dir: Path):
        predictors, task_costs = [], {}
        for run, strategy in zip(self.runs, self.strategies):
            task_dir = Path(run_dir) / TASKS_DIR / run.name
            task_dir.mkdir(parents=True, exist_ok=True)  # training logs go there
            predictor, costs = strategy.fit(run.splits, task_dir)
            predictors.append(predictor)
            task_costs[run.name] = costs
        costs = {key: sum(c.get(key) or 0 for c in task_costs.values()) for key in ADDITIVE_COSTS}
        costs["trainable_percent"] = 100.0 * costs["trainable_params"] / max(costs["total_params"], 1)
        costs["peak_memory_mb"] = max(c.get("peak_memory_mb") or 0 for c in task_costs.values())
        costs["device"] = next(iter(task_costs.values())).get("device")
        costs["best_dev"] = mean_metrics([c.get("best_dev") or {} for c in task_costs.values()])
        costs["task_dev"] = {name: c.get("best_dev") or {} for name, c in task_costs.items()}
        costs["tasks"] = task_costs
        return SeparatePredictor(self, predictors), costs


class SeparatePredictor:
    def __init__(self, strategy: SeparateStrategy, predictors: list):
        self.strategy, self.predictors = strategy, predictors

    def predict(self, examples: list[dict]) -> list[dict]:
        outputs = [None] * len(examples)
        for index, positions in enumerate(by_task(examples, len(self.predictors))):
            if not positions:
                continue
            answers = self.predictors[index].predict([examples[p] for p in positions])
            for position, answer in zip(positions, answers):
                outputs[position] = dict(answer, task=self.strategy.runs[index].name)
        return outputs

    def save(self, directory: Path) -> None:
        """Each task's model and resolved config under tasks/<name>/: an ordinary run directory there."""
        from tunelab.run import CONFIG_FILE

        for run, predictor in zip(self.strategy.runs, self.predictors):
            task_dir = Path(directory) / TASKS_DIR / run.name
            predictor.save(task_dir)
            (task_dir / CONFIG_FILE).write_text(dump_config(run.experiment), encoding="utf-8")
