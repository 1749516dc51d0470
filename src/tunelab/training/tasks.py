"""The task list of multi-task and continual experiments (`tasks:`), as single-task experiments.

Each entry of `tasks:` is merged over the experiment's own `task:`, `data:` and `prompt:` sections
(its `metrics` replace the experiment's), and the merged mapping is validated as a single-task
experiment. So every existing check and loader applies to each task unchanged, and an error in a
task names the line of the key that set the bad value: the entry's, or the shared section's.

```yaml
data: {k_shot: 16, max_test: 500}          # shared by every task unless an entry overrides it
tasks:
  - name: sst2
    data: {train: sst2/train.jsonl, test: sst2/test.jsonl}
    task: {text_field: sentence}
  - name: subj
    data: {train: subj/train.jsonl, test: subj/test.jsonl}
multitask: {sampling: temperature, temperature: 2}     # or: continual: {method: ewc}
```
"""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.config import ExperimentConfig, validate_experiment
from tunelab.errors import ConfigError

MERGED_SECTIONS = ("task", "data", "prompt")


@dataclass
class TaskRun:
    """One task of the list: its name, its single-task experiment, and (once loaded) its splits."""

    name: str
    experiment: ExperimentConfig
    splits: object = None


def check_task_list(config: ExperimentConfig) -> None:
    """`tasks:` and `multitask:`/`continual:` come together; names are distinct; two tasks at least."""
    modes = [key for key in ("multitask", "continual") if getattr(config, key) is not None]
    if config.tasks is None:
        if modes:
            raise ConfigError(f"{config.locate(modes[0])}: {modes[0]}: needs a `tasks:` list (two tasks or more, "
                              f"each with its own data); see the README's multi-task and continual sections")
        return
    if not modes:
        raise ConfigError(f"{config.locate('tasks')}: tasks: lists several tasks but neither `multitask:` nor "
                          f"`continual:` says how to learn them; add one of the two sections")
    if len(modes) == 2:
        raise ConfigError(f"{config.locate('continual')}: an experiment is either multi-task or continual; "
                          f"remove `multitask:` or `continual:`")
    if len(config.tasks) < 2:
        raise ConfigError(f"{config.locate('tasks')}: tasks: needs two tasks or more (got {len(config.tasks)})")
    seen: dict[str, int] = {}
    for index, entry in enumerate(config.tasks):
        if entry.name in seen:
            raise ConfigError(f"{config.locate('tasks', index, 'name')}: tasks.{index}.name: '{entry.name}' is "
                              f"already the name of tasks.{seen[entry.name]}; give each task its own name")
        seen[entry.name] = index


def task_experiments(config: ExperimentConfig) -> list[TaskRun]:
    """One validated single-task experiment per entry of `tasks:` (none without a task list)."""
    check_task_list(config)
    return [TaskRun(entry.name, task_experiment(config, index)) for index, entry in enumerate(config.tasks or [])]


def task_experiment(config: ExperimentConfig, index: int) -> ExperimentConfig:
    entry = config.tasks[index]
    raw = config.model_dump(mode="json", exclude={"tasks", "multitask", "continual", "sweep"})
    lines = dict(config.lines)
    for section in MERGED_SECTIONS:
        given = getattr(entry, section) or {}
        raw[section] = {**(raw.get(section) or {}), **given}
        for key in given:  # the entry's line, not the shared section's
            lines[(section, key)] = line_at(config.lines, ("tasks", index, section, key))
    if entry.metrics is not None:
        raw["metrics"] = list(entry.metrics)
        lines[("metrics",)] = line_at(config.lines, ("tasks", index, "metrics"))
    source = f"{config.source} (tasks.{index}: {entry.name})"
    experiment = validate_experiment(raw, source=source, lines=lines)
    return experiment.located_at(source, lines)


def line_at(lines: dict, key: tuple):
    for end in range(len(key), 0, -1):
        if key[:end] in lines:
            return lines[key[:end]]
    return None


def load_task_splits(tasks: list[TaskRun], seed: int) -> list[TaskRun]:
    """Load and K-shot sample every task's splits with the same seed (as its single-task run would)."""
    from tunelab.data import load_splits

    for run in tasks:
        exp = run.experiment
        run.splits = load_splits(exp.data, exp.task, seed)
        if run.splits.label_names and exp.task.label_names is None:
            exp.task.label_names = run.splits.label_names
    return tasks
