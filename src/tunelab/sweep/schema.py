"""The `sweep:` section of an experiment file, as a typed schema.

```yaml
sweep:
  k_shot: [8, 16]            # data.k_shot of each cell (null: the whole training set)
  seeds: [1, 2, 3]           # train.seed of each cell (also picks the K-shot sample)
  prompts:                   # prompt variants, merged over `prompt:` for prompt-based strategies
    review: {template: "Review: {{ text }}\\nSentiment:"}
    plain: {template: "{{ text }} It was"}
  strategies:
    - head                   # a bare name: default settings
    - name: lora
      settings: {r: 8}       # checked by the strategy's own schema
      train: {learning_rate: 1.0e-3}     # overrides of the `train:` section for this strategy
      search: {train.learning_rate: [1.0e-4, 1.0e-3], train.epochs: [5, 10]}
    - {name: zero_shot, model: {name: smollm2-135m}}
```

Every mapping forbids unknown keys; an error names the key (`sweep.strategies.1.setings`) and its
line in the file. Section overrides are checked against the section's schema the same way.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from tunelab.config import SEED_MAX, ExperimentConfig, ModelConfig, TrainConfig, line_of, validate_settings, where
from tunelab.errors import ConfigError
from tunelab.settings import StrictSettings

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SEARCHABLE = ("train", "model", "prompt", "settings")


class Resources(StrictSettings):
    """What one cell asks of a Ray worker (`sweep.executor: ray`)."""

    num_cpus: float = Field(1, gt=0)
    """CPU cores a cell holds while it runs (its torch threads are set to this, rounded up)."""
    num_gpus: float = Field(0, ge=0)
    """GPUs a cell holds (fractions share one GPU between cells)."""


class StrategyEntry(StrictSettings):
    name: str
    """Registered strategy name (`tunelab strategies`)."""
    id: str | None = None
    """Name of this entry in cell ids and the leaderboard (default: `name`); lets one strategy appear twice."""
    settings: dict[str, Any] = {}
    """The strategy's own settings (what `strategy:` holds beside `name` in a single run)."""
    model: dict[str, Any] = {}
    """Overrides of the `model:` section for this strategy (e.g. a decoder for prompting)."""
    train: dict[str, Any] = {}
    """Overrides of the `train:` section for this strategy."""
    prompt: dict[str, Any] = {}
    """Overrides of the `prompt:` section for this strategy (prompt variants are applied after these)."""
    prompt_variants: bool | list[str] | None = None
    """Which of `sweep.prompts` this strategy runs: all (true), none (false), a list of names, or
    automatic (null: all for prompt-based strategies, none for the others)."""
    continual: dict[str, Any] | None = None
    """Replaces the `continual:` section of a continual experiment for this strategy (e.g. `{method: ewc,
    ewc_lambda: 100}`), so one sweep compares methods on the same seeds; another method's settings stay out."""
    search: dict[str, list[Any]] = {}
    """Hyper-parameter grid, dotted key → values (`train.*`, `model.*`, `prompt.*`, `settings.*`);
    each combination is run and the one with the best dev metric (mean over seeds) is reported."""
    multitask: dict[str, Any] | None = None
    """Overrides of the `multitask:` section for this strategy, e.g. `{joint: false}`: each task alone
    (one model per task) beside an entry training one joint model, on the same seeds."""
    search_trials: int | None = Field(None, gt=0)
    """Random search: run this many combinations drawn from the grid instead of all of them."""
    resources: Resources | None = None
    """What each of this strategy's cells asks of a Ray worker (default: `sweep.resources`)."""

    @property
    def label(self) -> str:
        return self.id or self.name

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str | None) -> str | None:
        if value is not None and not SAFE_NAME.match(value):
            raise ValueError("must be letters, digits, '_', '.' or '-' (it becomes a directory name)")
        return value

    @field_validator("search")
    @classmethod
    def _search_keys(cls, search: dict[str, list]) -> dict[str, list]:
        for key, values in search.items():
            section = key.split(".", 1)[0]
            if section not in SEARCHABLE or "." not in key:
                raise ValueError(f"key '{key}' must start with one of {', '.join(s + '.' for s in SEARCHABLE)}")
            if not values:
                raise ValueError(f"'{key}' needs at least one value")
        return search


class SweepConfig(StrictSettings):
    strategies: list[StrategyEntry] = Field(min_length=1)
    """The strategies to compare: a name, or a mapping with `name` and the keys of `StrategyEntry`."""
    k_shot: list[int | None] | None = None
    """K examples per class for each cell; default: the experiment's `data.k_shot`."""
    seeds: list[Annotated[int, Field(ge=0, le=SEED_MAX)]] | None = None
    """Seeds of each cell (0 to 2**32-1); default: the experiment's `train.seed` only."""
    prompts: dict[str, dict[str, Any]] = {}
    """Prompt variants by name (A/B-tested when they score the same examples)."""
    isolation: Literal["process", "none"] = "process"
    """`process`: each cell runs in its own process (clean peak memory, a crash cannot stop the
    sweep); `none`: in this process (faster start-up; used by tests)."""
    workers: int = Field(1, ge=1)
    """Local executor: how many cells run at once on this machine, the cores shared out between them
    (each gets cores // workers torch threads). 2 on a 2-core machine runs the reference comparison
    faster than 1, because one cell's threads leave cores idle (README: Several cells at once).
    Needs `isolation: process`; Ray decides for itself from `resources`."""
    executor: Literal["local", "ray"] = "local"
    """`local`: cells run one after another on this machine; `ray`: each cell is a Ray task on the
    cluster at `ray_address` (or on a Ray started for this sweep). `tunelab compare --executor` overrides it."""
    ray_address: str | None = None
    """Address of a running Ray cluster (`HOST:PORT` of its head, `auto`, or `ray://HOST:PORT`);
    unset: a local Ray is started for the sweep and stopped after it."""
    resources: Resources = Resources()
    """What each cell asks of a Ray worker, unless its strategy entry says otherwise."""
    retries: int = Field(2, ge=0)
    """Ray: how many times a cell whose worker process or machine died is run again elsewhere."""
    search_seed: int = 0
    """Seed of random hyper-parameter search (which grid points are drawn)."""
    save_artifacts: bool = True
    """Keep each cell's trained weights (needed by `tunelab evaluate`/`predict` on a cell). false:
    only results (metrics, predictions, costs) are kept — much less disk for big sweeps."""
    reuse_scores: bool = True
    """Prompting cells on the unchanged pretrained LM (zero_shot, few_shot, prompt_ensemble) read the
    scores of prompts another cell already scored from `<out>/score_cache` instead of computing them
    again; exactly the same numbers (the key holds weights, tokenizer, prompts, batch size, device,
    threads, library versions), and the computing time is charged to the reading cell. false: every
    cell computes its own."""

    @field_validator("strategies", mode="before")
    @classmethod
    def _bare_names(cls, entries: Any) -> Any:
        if isinstance(entries, list):
            return [{"name": e} if isinstance(e, str) else e for e in entries]
        return entries

    @field_validator("k_shot", "seeds")
    @classmethod
    def _unique(cls, values: list | None) -> list | None:
        if values is not None:
            if not values:
                raise ValueError("needs at least one value")
            if len(set(values)) != len(values):
                raise ValueError(f"has duplicates: {values}")
        return values

    @field_validator("k_shot")
    @classmethod
    def _positive_k(cls, values: list | None) -> list | None:
        if values and any(v is not None and v < 1 for v in values):
            raise ValueError("K must be a positive number of examples per class (or null for all)")
        return values

    @field_validator("prompts")
    @classmethod
    def _variant_names(cls, prompts: dict) -> dict:
        for name in prompts:
            if not SAFE_NAME.match(name):
                raise ValueError(f"variant name '{name}' must be letters, digits, '_', '.' or '-'")
        return prompts

    @model_validator(mode="after")
    def _unique_ids(self) -> "SweepConfig":
        labels = [entry.label for entry in self.strategies]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"strategy entries must have distinct ids; give repeated ones an `id:` ({', '.join(repeated)})")
        for entry in self.strategies:
            if isinstance(entry.prompt_variants, list):
                unknown = [v for v in entry.prompt_variants if v not in self.prompts]
                if unknown:
                    raise ValueError(f"strategy '{entry.label}': prompt_variants {unknown} are not in sweep.prompts")
        return self


def check_distinct_ids(config: ExperimentConfig, entries: list) -> None:
    """Two strategy entries with one id would write the same cells: one line naming the id and both entries."""
    first_of: dict[str, int] = {}
    for index, entry in enumerate(entries):
        label = entry if isinstance(entry, str) else (entry.get("id") or entry.get("name")) if isinstance(entry, dict) else None
        if not isinstance(label, str):
            continue  # the schema reports a malformed entry
        if label not in first_of:
            first_of[label] = index
            continue
        first = first_of[label]
        first_line = line_of(config.lines, ("sweep", "strategies", first))
        at_line = f" (line {first_line})" if isinstance(first_line, int) else ""
        name = entry if isinstance(entry, str) else entry.get("name")
        raise ConfigError(
            f"{where(config.source, line_of(config.lines, ('sweep', 'strategies', index)))}: sweep.strategies.{index} "
            f"has the id '{label}' of sweep.strategies.{first}{at_line}; entries need distinct ids, or both would write "
            f"the same cells. Give one of them its own `id:` (e.g. `- {{name: {name}, id: {label}_2}}`) or remove the duplicate"
        )


def check_multitask_entry(config: ExperimentConfig, entry: StrategyEntry, at: tuple) -> None:
    """An entry's `multitask:` overrides a multi-task experiment's section, checked by its schema."""
    from tunelab.config import MultiTaskConfig

    if config.multitask is None:
        raise ConfigError(f"{where(config.source, line_of(config.lines, at + ('multitask',)))}: "
                          f"{'.'.join(map(str, at))}.multitask overrides the experiment's `multitask:` section, which "
                          f"is not set; add `tasks:` and `multitask:` (README: Multi-task fine-tuning) or remove it")
    validate_settings(MultiTaskConfig, entry.multitask, at + ("multitask",), config.source, config.lines)


def check_continual_entry(config: ExperimentConfig, entry: StrategyEntry, at: tuple) -> None:
    """An entry's `continual:` replaces a continual experiment's section, checked by its schema."""
    from tunelab.config import ContinualConfig

    if config.continual is None:
        raise ConfigError(f"{where(config.source, line_of(config.lines, at + ('continual',)))}: "
                          f"{'.'.join(map(str, at))}.continual replaces the experiment's `continual:` section, which "
                          f"is not set; add `tasks:` and `continual:` (README: Continual learning) or remove it")
    from tunelab.training.continual import check_method_settings

    settings = validate_settings(ContinualConfig, entry.continual, at + ("continual",), config.source, config.lines)
    check_method_settings(settings, lambda key: where(config.source, line_of(config.lines, at + ("continual", key))),
                          ".".join(map(str, at + ("continual",))))


def parse_sweep(config: ExperimentConfig) -> SweepConfig:
    """Validate `config.sweep` and each entry's section overrides; errors name `sweep.…` keys and lines."""
    if not config.sweep:
        raise ConfigError(f"{config.source}: no `sweep:` section; `tunelab compare` needs one (see examples/demo.yaml)")
    entries = config.sweep.get("strategies")
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        if isinstance(entry, dict):  # one entry at a time, so a misspelled key gets a "did you mean"
            validate_settings(StrategyEntry, entry, ("sweep", "strategies", index), config.source, config.lines)
    check_distinct_ids(config, entries if isinstance(entries, list) else [])
    sweep = validate_settings(SweepConfig, config.sweep, ("sweep",), config.source, config.lines)
    from tunelab.prompts import PromptSettings

    for index, entry in enumerate(sweep.strategies):
        at = ("sweep", "strategies", index)
        validate_settings(ModelConfig, entry.model, at + ("model",), config.source, config.lines)
        validate_settings(TrainConfig, entry.train, at + ("train",), config.source, config.lines)
        validate_settings(PromptSettings, entry.prompt, at + ("prompt",), config.source, config.lines)
        if entry.continual is not None:
            check_continual_entry(config, entry, at)
        if entry.multitask is not None:
            check_multitask_entry(config, entry, at)
    for name, variant in sweep.prompts.items():
        validate_settings(PromptSettings, variant, ("sweep", "prompts", name), config.source, config.lines)
    if sweep.workers > 1 and sweep.isolation == "none":
        raise ConfigError(f"{where(config.source, line_of(config.lines, ('sweep', 'workers')))}: sweep.workers "
                          f"{sweep.workers} runs cells side by side, each in its own process, but sweep.isolation is "
                          f"'none' (every cell in this process); set isolation: process or workers: 1")
    return sweep
