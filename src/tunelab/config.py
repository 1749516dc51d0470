"""The experiment file: a typed schema, YAML loading with line numbers, dotted overrides.

An experiment file mirrors `ExperimentConfig`. Every section forbids unknown keys: a misspelled
key is an error naming the key, its line in the file and the closest valid key. Strategy-specific
settings live under `strategy:` beside `name:` and are validated by the strategy's own schema.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from tunelab.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class ModelConfig(Section):
    name: str = "minilm-l6"
    """Embedded name (`tunelab models`), Hugging Face hub id, or local directory."""
    device: str = "auto"
    """`auto` (CUDA when available, else CPU), `cpu`, `cuda`, `cuda:1`, ..."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """`auto`: bf16 on CUDA devices that support it, fp32 elsewhere (bf16 is very slow on CPUs without bf16 units).
    Trained models keep fp32 weights under `auto` and compute in bf16 (see `train.mixed_precision`)."""
    max_length: int = Field(256, gt=0)
    """Inputs are truncated to this many tokens."""
    trust_remote_code: bool = False
    """Run code shipped with a hub model. Off unless you trust the model's authors."""
    pooling: Literal["cls", "mean"] | None = None
    """What a BERT-style classification head reads: `cls` (the model's [CLS] pooler) or `mean` (masked mean of the
    token states: right for sentence-transformers models such as minilm-l6, whose pooler never trained).
    Unset: cls, or what a saved tunelab model recorded."""


class TaskConfig(Section):
    type: Literal["classification", "pair_classification", "generation", "multiple_choice"] = "classification"
    text_field: str = "text"
    text_pair_field: str | None = None
    """Second sentence for pair classification (e.g. `text_pair`)."""
    label_field: str = "label"
    label_names: list[str] | None = None
    """The label set, in order. Integer labels in the data index into it. Inferred from train when omitted."""
    target_field: str = "target"
    """Reference text for generation tasks."""
    choices_field: str = "choices"
    """Candidate answers of multiple-choice tasks; the label is the correct choice's text."""

    @field_validator("label_names")
    @classmethod
    def _unique_labels(cls, names: list[str] | None) -> list[str] | None:
        if names is not None:
            if len(names) < 2:
                raise ValueError("needs at least two labels")
            if len(set(names)) != len(names):
                raise ValueError(f"has duplicates: {names}")
        return names


class DataConfig(Section):
    train: str | None = None
    """Training file (.jsonl, .json, .csv, .tsv) or `hf:NAME[@CONFIG]:SPLIT` for a `datasets` split."""
    dev: str | None = None
    """Dev split. With `k_shot`, the dev split is drawn from the training pool instead (LM-BFF)."""
    test: str | None = None
    k_shot: int | None = Field(None, gt=0)
    """K examples per class for training, sampled by seed from `train` (LM-BFF few-shot protocol)."""
    dev_k_shot: int | None = Field(None, gt=0)
    """K per class for the dev split, drawn from the training pool disjoint from train; defaults to `k_shot`."""
    max_test: int | None = Field(None, gt=0)
    """Evaluate on the first N test examples only (for quick runs)."""


class TrainConfig(Section):
    seed: int = 42
    learning_rate: float = Field(5e-5, gt=0)
    epochs: float = Field(3.0, gt=0)
    batch_size: int = Field(8, gt=0)
    """Global batch size (per step, before accumulation); split across processes when distributed."""
    eval_batch_size: int = Field(32, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    max_grad_norm: float | None = Field(1.0, gt=0)
    """Gradient clipping by global norm; null disables it."""
    early_stopping_patience: int | None = Field(None, gt=0)
    """Stop after this many evaluations without dev improvement; the best checkpoint is restored either way."""
    eval_strategy: Literal["epoch", "steps", "no"] = "epoch"
    eval_steps: int | None = Field(None, gt=0)
    metric_for_best: str | None = None
    """Dev metric that picks the best checkpoint; defaults to the first of `metrics`."""
    group_by_length: bool = True
    """Batch examples of similar length together (less padding)."""
    logging_steps: int = Field(10, gt=0)
    log_to: list[Literal["csv", "tensorboard"]] = ["csv", "tensorboard"]
    progress_bar: bool = True
    mixed_precision: Literal["auto", "bf16", "no"] = "auto"
    """`auto`: fp32 weights with bf16 autocast on CUDA devices that support bf16; plain fp32 on CPU."""


class StrategyConfig(BaseModel):
    """`name` picks the strategy; every other key is checked by that strategy's own settings."""

    model_config = ConfigDict(extra="allow")
    name: str = "full"

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ExperimentConfig(Section):
    name: str = "experiment"
    model: ModelConfig = ModelConfig()
    task: TaskConfig = TaskConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    strategy: StrategyConfig = StrategyConfig()
    prompt: dict[str, Any] | None = None
    """Template and verbalizer for prompt-based strategies (checked by those strategies)."""
    sweep: dict[str, Any] | None = None
    """Matrix of strategies, K values, seeds and prompt variants for `tunelab compare`."""
    metrics: list[str] = ["accuracy", "f1"]
    output_dir: str = "runs"

    # Where the config came from, so later checks (strategy settings) can name file and line.
    _source: str = PrivateAttr("<config>")
    _lines: dict = PrivateAttr(default_factory=dict)

    @property
    def source(self) -> str:
        return self._source

    @property
    def lines(self) -> dict:
        return self._lines


# ---------------------------------------------------------------------------------------------
# Loading


def load_experiment(path: str | Path, overrides: list[str] = ()) -> ExperimentConfig:
    """Read a YAML experiment file, apply `a.b=value` overrides, validate. Errors name file+line+key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text) or {}
        lines = key_lines(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (model:, task:, ...)")
    for item in overrides:
        path_of_key = apply_override(raw, item)
        lines[path_of_key] = f"command-line override {item!r}"
    config = validate_experiment(raw, source=str(path), lines=lines)
    config._source, config._lines = str(path), lines
    resolve_relative_paths(config, path.parent)
    return config


def validate_experiment(raw: dict, source: str = "<config>", lines: dict | None = None) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, ExperimentConfig, source, lines or {})) from None


def apply_override(raw: dict, item: str) -> tuple:
    """`train.learning_rate=2e-5` sets raw['train']['learning_rate']; the value is parsed as YAML."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. train.learning_rate=2e-5)")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        node[parts[-1]] = value
    return tuple(parts)


def resolve_relative_paths(config: ExperimentConfig, base: Path) -> None:
    """Data paths in a file are relative to that file (so examples work from any directory)."""
    for split in ("train", "dev", "test"):
        value = getattr(config.data, split)
        if value and not value.startswith("hf:") and not Path(value).is_absolute():
            candidate = (base / value).resolve()
            if candidate.exists() or not Path(value).exists():
                setattr(config.data, split, str(candidate))


def key_lines(text: str) -> dict[tuple, int]:
    """Map each key path (as a tuple) to its 1-based line in the YAML text."""
    lines: dict[tuple, int] = {}

    def walk(node, prefix: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                path = prefix + (key_node.value,)
                lines[path] = key_node.start_mark.line + 1
                walk(value_node, path)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, prefix + (index,))

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return lines


def format_validation_error(
    err: ValidationError, schema: type[BaseModel], source: str, lines: dict, prefix: tuple = ()
) -> str:
    """One line per problem: `file, line N: unknown key 'train.learnig_rate' — did you mean ...?`"""
    messages = []
    for problem in err.errors():
        inner = tuple(p for p in problem["loc"] if not str(p).startswith("function-"))
        loc = prefix + inner
        where = source + location(lines.get(loc))
        key = ".".join(str(p) for p in loc) or "(top level)"
        if problem["type"] == "extra_forbidden":
            hint = closest_key(schema, inner)
            if hint and prefix:
                hint = ".".join(map(str, prefix)) + "." + hint
            messages.append(f"{where}: unknown key '{key}'" + (f" — did you mean '{hint}'?" if hint else ""))
        else:
            messages.append(f"{where}: '{key}': {problem['msg']} (got {problem.get('input')!r})")
    return "invalid configuration:\n  " + "\n  ".join(messages)


def location(line: int | str | None) -> str:
    """`, line 7` for a key from the file; ` (command-line override '...')` for one from the CLI."""
    if line is None:
        return ""
    return f", line {line}" if isinstance(line, int) else f" ({line})"


def closest_key(schema: type[BaseModel], loc: tuple) -> str | None:
    """The valid key closest to loc[-1] in the section loc[:-1] (walking nested schemas)."""
    section: Any = schema
    for part in loc[:-1]:
        field = getattr(section, "model_fields", {}).get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        section = annotation
    valid = list(getattr(section, "model_fields", {}))
    match = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
    prefix = ".".join(str(p) for p in loc[:-1])
    return (f"{prefix}.{match[0]}" if prefix else match[0]) if match else None


def validate_settings(
    schema: type[BaseModel], options: dict, prefix: tuple = (), source: str = "<config>", lines: dict | None = None
) -> BaseModel:
    """Validate a component's own settings (a strategy's, the prompt's); errors name `prefix.key`."""
    try:
        return schema.model_validate(options)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, schema, source, lines or {}, prefix)) from None


def dump_config(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
