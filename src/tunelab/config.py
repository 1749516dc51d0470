"""The experiment file: a typed schema, YAML loading with line numbers, dotted overrides.

An experiment file mirrors `ExperimentConfig`. Every section forbids unknown keys: a misspelled
key is an error naming the key, its line in the file and the closest valid key. Strategy-specific
settings live under `strategy:` beside `name:` and are validated by the strategy's own schema.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from tunelab.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


DEVICE_FORM = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DEVICE_FORMS = "auto, cpu, cuda, cuda:N (e.g. cuda:1), mps"
SEED_MAX = 2**32 - 1  # numpy's seeding accepts 0 .. 2**32-1 only
NOT_IN_NAMES = ("/", "\\", "\0")  # path separators (and NUL): `name:` is one folder, not a path
MERGE_TAG = "tag:yaml.org,2002:merge"


class ModelConfig(Section):
    name: str = "minilm-l6"
    """Embedded name (`tunelab models`), Hugging Face hub id, or local directory."""
    device: str = "auto"
    """`auto` (CUDA when available, else CPU), `cpu`, `cuda`, `cuda:1`, ..., `mps`."""
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

    @field_validator("device")
    @classmethod
    def _device_form(cls, device: str) -> str:
        # Checked here, not by torch: torch's own error is a traceback raised only after the model loaded.
        if not DEVICE_FORM.fullmatch(device):
            raise ValueError(f"is not a device tunelab knows; use one of {DEVICE_FORMS}")
        return device


class TaskConfig(Section):
    type: Literal["classification", "pair_classification", "generation", "multiple_choice", "token_classification", "extractive_qa"] = "classification"
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
    tokens_field: str = "tokens"
    """token_classification: the list of words of each record."""
    tags_field: str = "tags"
    """token_classification: the IOB2 tag of each word (`O`, `B-PER`, `I-PER`, ...)."""
    question_field: str = "question"
    """Extractive QA: the question."""
    context_field: str = "context"
    """Extractive QA: the passage the answer is a span of."""
    answers_field: str = "answers"
    """Extractive QA: `{text: [...], answer_start: [...]}`, character offsets into the context (SQuAD layout)."""

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
    test_fraction: float | None = Field(None, gt=0, lt=1)
    """No test file: hold out this fraction of `train` as the test split (per class for classification), drawn
    once with a fixed seed so that every seed and cell is scored on the same examples; K-shot train and dev
    and the unlabelled pool come from the rest. `tunelab init` writes 0.2 when given no --test."""
    k_shot: int | None = Field(None, gt=0)
    """K examples per class for training, sampled by seed from `train` (LM-BFF few-shot protocol); for tasks
    without classes (generation, token_classification) K examples (sentences) in all."""
    dev_k_shot: int | None = Field(None, gt=0)
    """K per class for the dev split, drawn from the training pool disjoint from train; defaults to `k_shot`."""
    max_test: int | None = Field(None, gt=0)
    """Evaluate on the first N test examples only (for quick runs)."""
    max_test_seed: int | None = Field(None, ge=0)
    """With `max_test`: draw the N test examples at random with this seed (kept in file order) instead
    of taking the first N, for test files sorted by label (MR, Subj). The same seed gives every run the same examples."""
    skip_empty_text: bool = False
    """Leave out records whose text field is empty or blank (each named in one warning) instead of stopping
    at the first: for files such as MPQA's train split, three of whose lines hold no sentence."""
    perturbed_test: bool = True
    """Classification tasks: also evaluate on a perturbed copy of the test split (typos, word swaps,
    word deletions; deterministic by `train.seed`), reported as `perturbed` beside `test`."""

    @model_validator(mode="after")
    def _one_test_split(self) -> "DataConfig":
        if self.test_fraction is not None and self.test:
            raise ValueError("test_fraction holds part of data.train out as the test split, and data.test names a "
                             "test file: keep one of them")
        if self.test_fraction is not None and not self.train:
            raise ValueError("test_fraction holds part of data.train out as the test split; set data.train")
        return self


class DropoutConfig(Section):
    """Dropout probabilities set on the loaded model (config fields and the built dropout modules)."""

    hidden: float | None = Field(None, ge=0, lt=1)
    """Embeddings and the residual stream (BERT's hidden_dropout_prob)."""
    attention: float | None = Field(None, ge=0, lt=1)
    """Attention probabilities (BERT's attention_probs_dropout_prob, Llama's attention_dropout)."""
    classifier: float | None = Field(None, ge=0, lt=1)
    """The classification head's dropout (classifier_dropout)."""

    def given(self) -> dict:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class AdversarialConfig(Section):
    """Adversarial training on the input embeddings (tunelab.training.adversarial has the formulas)."""

    method: Literal["fgm", "pgd", "freelb"] = "fgm"
    """`fgm` (one step of size epsilon), `pgd` (`steps` projected steps of `step_size`), `freelb`
    (the losses of all `steps` ascent steps averaged)."""
    epsilon: float = Field(1.0, gt=0)
    """L2 radius of the perturbation of each example's token embeddings."""
    steps: int | None = Field(None, ge=1)
    """Ascent steps of pgd and freelb; default 3 (fgm takes one step and refuses the key)."""
    step_size: float | None = Field(None, gt=0)
    """Length of each pgd/freelb ascent step; default epsilon / steps (fgm refuses the key)."""

    @model_validator(mode="after")
    def _fgm_takes_one_step(self):
        # A key the method would ignore is an error: the user meant something that would not happen.
        given = [key for key in ("steps", "step_size") if getattr(self, key) is not None]
        if self.method == "fgm" and given:
            raise ValueError(f"fgm takes one step of size epsilon and no {' or '.join(given)}; "
                             f"remove it, or choose method: pgd or freelb")
        return self


AUGMENT_METHOD_KEYS = {
    "token_edits": ("edit_rate", "operations"),
    "paraphrase": ("model", "prompt", "temperature", "top_p", "max_new_tokens", "batch_size"),
    "back_translation": ("forward_model", "backward_model", "temperature", "top_p", "max_new_tokens", "batch_size"),
}
"""Which settings each augmentation method reads (a setting of another method is an error, not ignored)."""


class AugmentConfig(Section):
    """Augmentation of the training split (tunelab.training.augment): `copies` new texts per training
    example, made once per seed and cached; dev and test are never augmented."""

    method: Literal["token_edits", "paraphrase", "back_translation"]
    """`token_edits` (random swap, deletion, insertion of words), `paraphrase` (a causal LM rewrites the
    text), `back_translation` (forward_model translates, backward_model translates back)."""
    copies: int = Field(1, ge=1, le=100)
    """New texts per training example (fewer when the method repeats itself or returns the text unchanged)."""
    edit_rate: float = Field(0.1, gt=0, le=0.5)
    """token_edits: share of a text's words each edit touches, at least one word (EDA's alpha)."""
    operations: list[Literal["swap", "delete", "insert"]] = Field(["swap", "delete", "insert"], min_length=1)
    """token_edits: the edits to choose from, one per copy, drawn at random."""
    model: str = "smollm2-135m"
    """paraphrase: the causal LM that rewrites (embedded name, local directory or hub id)."""
    prompt: str = "Rewrite this sentence in other words, keeping its meaning:\n{text}"
    """paraphrase: the instruction; `{text}` is replaced by the training text (chat template applied when the model has one)."""
    forward_model: str | None = None
    """back_translation: sequence-to-sequence model (name or directory) that translates into the pivot language."""
    backward_model: str | None = None
    """back_translation: sequence-to-sequence model that translates the pivot text back."""
    temperature: float = Field(0.9, gt=0)
    """paraphrase, back_translation: sampling temperature (the forward pass of back-translation samples)."""
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(64, gt=0)
    batch_size: int = Field(8, gt=0)
    """paraphrase, back_translation: texts generated per batch."""

    @model_validator(mode="after")
    def _settings_of_the_method(self) -> "AugmentConfig":
        for other, keys in AUGMENT_METHOD_KEYS.items():
            stray = [k for k in keys if k in self.model_fields_set and k not in AUGMENT_METHOD_KEYS[self.method]]
            if stray:
                raise ValueError(f"{', '.join(stray)} is a setting of method {other}, not of {self.method}; remove it")
        if self.method == "back_translation" and not (self.forward_model and self.backward_model):
            raise ValueError("method back_translation needs forward_model and backward_model (translation models: "
                             "a name or a local directory of a sequence-to-sequence model, e.g. Marian en→de and de→en)")
        return self


class TrainConfig(Section):
    seed: int = Field(42, ge=0, le=SEED_MAX)
    """Seed of initialisation, data order and K-shot sampling: 0 to 2**32-1."""
    learning_rate: float = Field(5e-5, gt=0)
    epochs: float = Field(3.0, gt=0)
    batch_size: int = Field(8, gt=0)
    """Global batch size (per step, before accumulation); split across processes when distributed."""
    eval_batch_size: int = Field(32, gt=0)
    """Rows per batch when predicting or scoring; batches run longest first (dev during training: at most this
    many rows and this many rows' worth of median-length tokens, so short rows are not padded to long ones)."""
    gradient_accumulation_steps: int = Field(1, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    max_grad_norm: float | None = Field(1.0, gt=0)
    """Gradient clipping by global norm; null disables it."""
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    """Cross-entropy against (1-e)*one-hot + e/L; 0: plain cross-entropy."""
    dropout: DropoutConfig | None = None
    """Dropout overrides applied to the loaded model: {hidden, attention, classifier}, each optional."""
    rdrop_alpha: float = Field(0.0, ge=0)
    """R-Drop: two dropout passes, loss = mean CE + alpha * symmetric KL between them; 0: off."""
    augment: AugmentConfig | None = None
    """Augmentation of the training split: {method: token_edits | paraphrase | back_translation, copies, ...}; null: off."""
    adversarial: AdversarialConfig | None = None
    """Adversarial training on the input embeddings: {method: fgm | pgd | freelb, epsilon, steps, step_size}; null: off."""
    early_stopping_patience: int | None = Field(None, gt=0)
    """Stop after this many evaluations without dev improvement; the best checkpoint is restored either way."""
    eval_strategy: Literal["epoch", "steps", "no"] = "epoch"
    eval_steps: int | None = Field(None, gt=0)
    metric_for_best: str | None = None
    """Dev metric that picks the best checkpoint; defaults to the first of `metrics`."""
    group_by_length: bool = True
    """Batch training examples of similar length together (less padding)."""
    logging_steps: int = Field(10, gt=0)
    log_to: list[Literal["csv", "tensorboard", "mlflow", "wandb"]] = ["csv", "tensorboard"]
    """Where training logs go: `csv` (logs.csv), `tensorboard` (tensorboard/), `mlflow` (the Trainer's MLflow
    integration; a file store in the run directory's `mlruns/` unless MLFLOW_TRACKING_URI is set), `wandb`
    (the Trainer's W&B integration, offline into the run directory's `wandb/` unless WANDB_MODE is set);
    mlflow and wandb need the `tracking` extra."""
    progress_bar: bool = True
    mixed_precision: Literal["auto", "bf16", "no"] = "auto"
    """`auto`: fp32 weights with bf16 autocast on CUDA devices that support bf16; plain fp32 on CPU."""

    @field_validator("log_to")
    @classmethod
    def _tracker_installed(cls, log_to: list[str]) -> list[str]:
        # Checked with the config, not when the Trainer starts: a missing client would fail after the weights load.
        import importlib.util

        clients = {"mlflow": "the MLflow client (mlflow-skinny)", "wandb": "the Weights & Biases client (wandb)"}
        for name, client in clients.items():
            if name in log_to and importlib.util.find_spec(name) is None:
                raise ValueError(f"{name} needs {client}, which is not installed: pip install 'tunelab[tracking]', "
                                 f"or remove {name} from the list")
        return log_to


class TaskEntry(Section):
    """One task of a multi-task or continual experiment (`tasks:`). Its `task`, `data` and `prompt`
    mappings are merged over the experiment's own sections (so `data.k_shot` can be set once for
    all tasks), `metrics` replaces the experiment's list; the merged result is checked like a
    single-task experiment (`tunelab.training.tasks.task_experiments`)."""

    name: str
    """Name of the task in results and the report: letters, digits, '_', '.' or '-'."""
    task: dict[str, Any] = {}
    """Overrides of the `task:` section (text/label fields, label names, type)."""
    data: dict[str, Any] = {}
    """Overrides of the `data:` section (train/dev/test files, k_shot, max_test)."""
    metrics: list[str] | None = None
    """This task's metrics (default: the experiment's `metrics`)."""
    prompt: dict[str, Any] | None = None
    """Overrides of the `prompt:` section (a template and verbalizer per task for prompt read-outs)."""

    @field_validator("name")
    @classmethod
    def _safe_task_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError("must be letters, digits, '_', '.' or '-' (it names results and files)")
        return name


class MultiTaskConfig(Section):
    """Multi-task fine-tuning over `tasks:`: one shared model, a head (or a template) per task."""

    sampling: Literal["proportional", "temperature", "equal"] = "proportional"
    """Which task each training example comes from: in proportion to the tasks' training sizes n_i,
    p_i ∝ n_i^(1/T) (`temperature`), or uniformly (`equal`)."""
    temperature: float = Field(2.0, gt=0)
    """T of `temperature` sampling (1: proportional; large: towards equal)."""
    joint: bool = True
    """true: one shared model learns every task at once; false: each task alone (one model per task,
    the same per-task results and mean), the single-task baseline a sweep compares against."""
    head: Literal["per_task", "shared"] = "per_task"
    """`per_task`: each task its own rows of the output layer (labels never clash); `shared`: one set
    of rows for every task, which needs every task to have the same label names (a task whose label
    set differs clashes and is refused)."""


class ContinualConfig(Section):
    """Continual learning over `tasks:` in their order: train on each in turn, evaluate on all."""

    method: Literal["sequential", "replay", "ewc", "lwf"] = "sequential"
    """`sequential` (plain fine-tuning, the forgetting baseline), `replay` (a buffer of earlier tasks'
    examples mixed into training), `ewc` (elastic weight consolidation), `lwf` (learning without
    forgetting: distillation from the model before the new task)."""
    buffer_size: int = Field(16, ge=1)
    """replay: training examples kept from *each* earlier task (drawn by `train.seed`) and mixed into
    every later task's training split."""
    ewc_lambda: float = Field(1000.0, gt=0)
    """ewc: strength λ of the penalty λ/2 · Σ_i F_i (θ_i − θ*_i)²."""
    fisher_samples: int | None = Field(None, ge=1)
    """ewc: training examples of the finished task the Fisher information is estimated on (null: all)."""
    lwf_alpha: float = Field(1.0, gt=0)
    """lwf: weight α of the distillation term α · T² · KL(old ‖ new) on the earlier tasks' heads."""
    lwf_temperature: float = Field(2.0, gt=0)
    """lwf: temperature T that softens both distributions of the distillation term."""

    def misplaced(self) -> list[tuple[str, str]]:
        """(key, its method) for each setting given for another method than `method`: it would be
        silently ignored, so it is most likely a mistaken method (checked where lines are known)."""
        owners = {key: owner for owner, keys in CONTINUAL_METHOD_KEYS.items() for key in keys}
        return [(key, owners[key]) for key in sorted(self.model_fields_set) if owners.get(key, self.method) != self.method]


CONTINUAL_METHOD_KEYS = {"replay": ("buffer_size",), "ewc": ("ewc_lambda", "fisher_samples"),
                         "lwf": ("lwf_alpha", "lwf_temperature")}
"""Which settings each continual method reads."""


class StrategyConfig(BaseModel):
    """`name` picks the strategy; every other key is checked by that strategy's own settings."""

    model_config = ConfigDict(extra="allow")
    name: str = "full"

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


TASK_DEFAULT_METRICS = {
    "token_classification": ("entity_f1", "entity_precision", "entity_recall", "per_type_f1"),
}
"""Metrics of task types that classification's default (accuracy, f1) does not fit."""


class ExperimentConfig(Section):
    name: str = "experiment"
    """Folder under `output_dir` that holds this experiment's runs: a plain folder name, no path."""
    model: ModelConfig = ModelConfig()
    task: TaskConfig = TaskConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    strategy: StrategyConfig = StrategyConfig()
    prompt: dict[str, Any] | None = None
    """Template and verbalizer for prompt-based strategies (checked by those strategies)."""
    tasks: list[TaskEntry] | None = None
    """Several tasks, for multi-task (`multitask:`) or continual (`continual:`) learning; each has its own
    data, labels, metrics and prompt. Unset: the single task of `task:` and `data:`."""
    multitask: MultiTaskConfig | None = None
    """Train on all of `tasks:` at once (see `MultiTaskConfig`)."""
    continual: ContinualConfig | None = None
    """Train on `tasks:` one after another (see `ContinualConfig`)."""
    sweep: dict[str, Any] | None = None
    """Matrix of strategies, K values, seeds and prompt variants for `tunelab compare`."""
    metrics: list[str] = ["accuracy", "f1"]
    output_dir: str = "runs"

    # Where the config came from, so later checks (strategy settings) can name file and line.
    _source: str = PrivateAttr("<config>")
    _lines: dict = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _task_default_metrics(cls, raw):
        # The default metrics are classification's; a task type with metrics of its own gets those unless the file names some.
        if isinstance(raw, dict) and "metrics" not in raw and isinstance(raw.get("task"), dict):
            defaults = TASK_DEFAULT_METRICS.get(raw["task"].get("type"))
            if defaults:
                raw = {**raw, "metrics": list(defaults)}
        return raw

    @field_validator("name")
    @classmethod
    def _plain_folder_name(cls, name: str) -> str:
        # A path here would write runs outside output_dir ('../x', '/abs') or into output_dir itself ('.', '').
        if name.strip() in ("", ".", "..") or any(c in name for c in NOT_IN_NAMES):
            raise ValueError(
                "must be a plain folder name (it names the folder under output_dir that holds the runs): "
                "not empty, '.' or '..', and without '/' or '\\'; e.g. sst2-minilm. Use output_dir to choose where runs go"
            )
        return name

    @property
    def source(self) -> str:
        return self._source

    def locate(self, *key) -> str:
        """Where `key` (e.g. 'model', 'max_length') was set: `file, line 7`, a command-line override, or the file."""
        return where(self._source, line_of(self._lines, key))

    @property
    def lines(self) -> dict:
        return self._lines

    def located_at(self, source: str, lines: dict | None = None) -> ExperimentConfig:
        """Say where this config came from (a file, a sweep cell) and, if given, where its keys were set
        (`{key path: line}`), so later checks can name them; returns the config itself."""
        self._source = source
        if lines is not None:
            self._lines = lines
        return self


# ---------------------------------------------------------------------------------------------
# Loading


def load_experiment(path: str | Path, overrides: list[str] = ()) -> ExperimentConfig:
    """Read a YAML experiment file, apply `a.b=value` overrides, validate. Errors name file+line+key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment file not found: {path}")
    raw, lines = parse_yaml(read_config_text(path), str(path))
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (model:, task:, ...)")
    for item in overrides:
        path_of_key = apply_override(raw, item)
        for stale in [key for key in lines if key[: len(path_of_key)] == path_of_key]:
            del lines[stale]  # the override replaced what the file said there
        lines[path_of_key] = f"command-line override {item!r}"
    config = validate_experiment(raw, source=str(path), lines=lines)
    config.located_at(str(path), lines)
    resolve_relative_paths(config, path.parent)
    return config


def read_config_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}, line {line}: the file is not valid UTF-8 (byte {err.object[err.start]:#04x}: {err.reason}); "
            f"re-save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`, or your editor's 'save with encoding')"
        ) from None


def parse_yaml(text: str, source: str) -> tuple[Any, dict[tuple, int]]:
    """(data, key path → line) of a user's YAML text; errors name `source`.

    A key given twice in one mapping is an error: PyYAML keeps the last value without a word, so
    the user's other value would be ignored silently.
    """
    try:
        lines = key_lines(text, source)
        return yaml.safe_load(text), lines
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: invalid YAML: {err}") from None


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
        key_lines(value, f"command-line override {item!r}", tuple(parts))  # a key twice in {...}: an error, as in a file
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        node[parts[-1]] = value
    return tuple(parts)


def resolve_relative_paths(config: ExperimentConfig, base: Path) -> None:
    """Data paths in a file are relative to that file (so examples work from any directory)."""
    for split in ("train", "dev", "test"):
        setattr(config.data, split, resolved_path(getattr(config.data, split), base))
    for entry in config.tasks or []:
        for split in ("train", "dev", "test"):
            if isinstance(entry.data.get(split), str):
                entry.data[split] = resolved_path(entry.data[split], base)


def resolved_path(value: str | None, base: Path) -> str | None:
    if value and not value.startswith("hf:") and not Path(value).is_absolute():
        candidate = (base / value).resolve()
        if candidate.exists() or not Path(value).exists():
            return str(candidate)
    return value


def key_lines(text: str, source: str = "<yaml>", within: tuple = ()) -> dict[tuple, int]:
    """Map each key path (as a tuple) and each list item to its 1-based line in the YAML text.
    Raises ConfigError for a key given twice in one mapping. `within`: the key an override's value
    sets (its lines are not the user's: the override is one argument)."""
    lines: dict[tuple, int] = {}

    def walk(node, prefix: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple, int] = {}
            for key_node, value_node in node.value:
                path = prefix + (key_node.value,)
                line = key_node.start_mark.line + 1
                if key_node.tag != MERGE_TAG:  # `<<: *base` merges are meant to repeat keys
                    identity = (key_node.tag, key_node.value)
                    if identity in seen:
                        raise duplicate_key(source, within + path, None if within else (seen[identity], line))
                    seen[identity] = line
                lines[path] = line
                walk(value_node, path)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[prefix + (index,)] = item.start_mark.line + 1
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
        place = where(source, line_of(lines, loc))
        key = ".".join(str(p) for p in loc) or "(top level)"
        if problem["type"] == "extra_forbidden":
            hint = closest_key(schema, inner)
            if hint and prefix:
                hint = ".".join(map(str, prefix)) + "." + hint
            messages.append(f"{place}: unknown key '{key}'" + (f" — did you mean '{hint}'?" if hint else ""))
        else:
            messages.append(f"{place}: '{key}': {problem['msg']}{shown_input(problem.get('input'))}")
    return "invalid configuration:\n  " + "\n  ".join(messages)


def duplicate_key(source: str, path: tuple, lines: tuple[int, int] | None) -> ConfigError:
    key = ".".join(str(p) for p in path)
    place, which = source, ""
    if lines:
        place = f"{source}, line {lines[1]}"
        which = f" (lines {lines[0]} and {lines[1]})" if lines[0] != lines[1] else f" (both on line {lines[0]})"
    return ConfigError(
        f"{place}: key '{key}' is given twice in the same mapping{which}; YAML would silently keep only "
        f"the last value. Remove one of them"
    )


def shown_input(value: Any) -> str:
    """` (got 7)` for a value; nothing for a whole mapping (a section-wide rule: the dump would bury the message)."""
    if isinstance(value, dict):
        return ""
    text = repr(value)
    return f" (got {text if len(text) <= 80 else text[:77] + '...'})"


def line_of(lines: dict, loc: tuple) -> int | str | None:
    """The line of `loc`, else of its nearest enclosing key (e.g. a section given whole by an override)."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def where(source: str, line: int | str | None) -> str:
    """`file, line 7`; for a value given on the command line, that override alone (the file is not to blame)."""
    return line if isinstance(line, str) else source + location(line)


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
