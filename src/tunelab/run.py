"""One run: validate everything, adapt the model, evaluate on test, write the run directory atomically.

A run directory holds `config.yaml` (resolved), `metrics.json`, `predictions.jsonl`, `costs.json`,
the artifact (whole model, trainable delta or adapter directory) and training logs. It is written
under a hidden `.NAME.partial` directory and renamed into place only when complete, so a failed or
interrupted run never leaves a directory that looks finished, and earlier results stay intact.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

from tunelab.artifacts import check_artifact_kept, missing_artifact
from tunelab.config import ExperimentConfig, dump_config, validate_experiment, validate_settings
from tunelab.data import load_split, load_splits
from tunelab.data.perturb import perturbed_copy, text_keys
from tunelab.data.squad import check_qa_metrics
from tunelab.errors import ConfigError, UserError
from tunelab.methods import get_strategy
from tunelab.prompts import score_cache
from tunelab.metrics import compute_metrics, get_metric
from tunelab.model_checks import check_model, check_when_loaded
from tunelab.training.adversarial import check_trains
from tunelab.training.augment import augment_training, check_augment, check_augment_scope
from tunelab.distributed import is_main_process

CONFIG_FILE, METRICS_FILE, PREDICTIONS_FILE, COSTS_FILE = "config.yaml", "metrics.json", "predictions.jsonl", "costs.json"
PERTURBED_PREDICTIONS_FILE = "perturbed_predictions.jsonl"
PERTURBED_TASKS = ("classification", "pair_classification")


@dataclass
class Prepared:
    """Everything checked before any model is loaded."""

    config: ExperimentConfig
    strategy: object
    splits: object
    model_checked: bool = True
    """False when the model's facts were unknown before loading (smollm2-135m before its one-time
    conversion): `execute` checks them once the model's directory exists, before training."""
    write: object = None
    """What scores and writes the run after `fit` (None: `evaluate_and_write`); multi-task runs bring their own."""


def prepare(config: ExperimentConfig) -> Prepared:
    """Validate strategy settings, metrics and data (file, line, key in every error); build the strategy."""
    check_augment_scope(config)  # multi-task and continual runs build their own training splits
    if config.multitask is not None:  # several tasks, one run directory (tunelab.training.multitask)
        from tunelab.training.multitask import prepare_multitask

        return prepare_multitask(config)
    if config.continual is not None:  # tasks in turn, one model, the accuracy matrix (tunelab.training.continual)
        from tunelab.training.continual import prepare_continual

        return prepare_continual(config)
    info = located(config, ("strategy", "name"), lambda: get_strategy(config.strategy.name))
    located(config, ("metrics",), lambda: [get_metric(name) for name in config.metrics])
    check_metric_kinds(config)
    check_qa_metrics(config)  # extractive QA: only the SQuAD metrics take every gold answer
    settings = validate_settings(info.cls.Settings, config.strategy.options(), ("strategy",), config.source, config.lines)
    check_augment(config, info)  # train.augment: the strategy trains, its models exist (no weights)
    model_checked = check_model(config)  # config.json only: no weights load (nor smollm2's conversion)
    splits = load_splits(config.data, config.task, config.train.seed)
    if not splits.test:
        raise ConfigError("data.test is not set: a run is evaluated on a test split; name a test file, or set "
                          "data.test_fraction (e.g. 0.2) to hold part of data.train out as one")
    if splits.label_names and config.task.label_names is None:
        config.task.label_names = splits.label_names  # saved resolved, so evaluate/predict use the same ids
    strategy = info.cls(settings, config, splits.label_names)
    strategy.check()
    if hasattr(strategy, "check_splits"):  # checks that need the data and a tokenizer, still no weights
        strategy.check_splits(splits)
    if config.train.adversarial is not None:
        check_trains(info.cls, config.locate("train", "adversarial"))
    return Prepared(config, strategy, splits, model_checked)


def check_metric_kinds(config: ExperimentConfig) -> None:
    """Entity metrics score token classification and nothing else; token classification only them."""
    from tunelab.metrics_ner import TOKEN_METRICS

    tagging = config.task.type == "token_classification"
    wrong = [name for name in config.metrics if (name in TOKEN_METRICS) != tagging]
    if wrong and tagging:
        raise ConfigError(f"{config.locate('metrics')}: task.type token_classification is scored by entity metrics; "
                          f"{', '.join(wrong)} cannot score tag sequences; use metrics: [{', '.join(TOKEN_METRICS)}]")
    if wrong:
        raise ConfigError(f"{config.locate('metrics')}: {', '.join(wrong)} score(s) IOB2 tag sequences and need "
                          f"task.type: token_classification, not {config.task.type}")


def located(config: ExperimentConfig, key: tuple, lookup):
    """Run a registry lookup; an unknown name is reported where the experiment wrote it."""
    try:
        return lookup()
    except ConfigError as err:
        raise ConfigError(f"{config.locate(*key)}: {err}") from None


def default_run_dir(config: ExperimentConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(config.output_dir) / config.name / f"{config.strategy.name}-seed{config.train.seed}-{stamp}"


def execute(prepared: Prepared, run_dir: Path) -> dict:
    """Fit, evaluate and write `run_dir` atomically. Returns the metrics dict (main process)."""
    if run_dir.exists():
        raise UserError(f"run directory {run_dir} already exists; choose another --out or remove it")
    staging = run_dir.parent / f".{run_dir.name}.partial"
    created = missing_parents(staging)  # folders mkdir makes for this run; a failed run removes them again
    if is_main_process():
        shutil.rmtree(staging, ignore_errors=True)
        make_staging(staging, run_dir, created)
    try:
        if not prepared.model_checked:
            check_when_loaded(prepared.config)
        # train grows by the augmented copies; prepared.splits keeps the originals (num_train counts them)
        splits, augment_costs = augment_training(prepared.config, prepared.splits, run_dir.parent, staging)
        predictor, costs = prepared.strategy.fit(splits, staging)
        costs.update(augment_costs)
        if not is_main_process():
            return {}
        result = (prepared.write or evaluate_and_write)(prepared, predictor, costs, staging)
        os.replace(staging, run_dir)
        return result
    except BaseException:
        if is_main_process():
            shutil.rmtree(staging, ignore_errors=True)
            remove_if_empty(created)
        raise


def missing_parents(path: Path) -> list[Path]:
    """The ancestors of `path` that do not exist yet, nearest first."""
    return [parent for parent in Path(path).parents if not parent.exists()]


def make_staging(staging: Path, run_dir: Path, created: list[Path]) -> None:
    """mkdir the staging directory; an OS refusal (read-only place, a parent that is a file) is the user's to fix."""
    try:
        staging.mkdir(parents=True)
    except OSError as err:
        remove_if_empty(created)
        raise UserError(f"cannot create the run directory {run_dir}: {err.strerror or err} ({err.filename or staging}); "
                        f"choose another --out (or output_dir) in a writable folder") from None


def remove_if_empty(folders: list[Path]) -> None:
    """Remove folders (nearest first) while they are empty, so a failed run leaves no empty parents behind."""
    for folder in folders:
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue  # mkdir failed before making it
        except OSError:
            return  # not empty: something else lives there


def evaluate_and_write(prepared: Prepared, predictor, costs: dict, directory: Path) -> dict:
    import torch

    config, test = prepared.config, prepared.splits.test
    clock = score_cache.Stopwatch()
    outputs = predictor.predict(test)
    # an ensemble looks its members' stored outputs up: serving it costs their evaluation time too;
    # scores another cell of the sweep computed (score_cache) cost what computing them took
    seconds = clock.seconds() + costs.get("member_eval_seconds", 0.0)
    if clock.reused:
        costs["eval_seconds_reused"] = clock.reused
    costs["eval_seconds"] = seconds
    costs["eval_examples_per_second"] = len(test) / max(seconds, 1e-9)
    costs.setdefault("torch_threads", torch.get_num_threads())  # the times above depend on it (sweep.workers)
    metrics = score(config, test, outputs)
    result = {"test": metrics, "dev": comparable_dev(costs), "num_test": len(test), "num_train": len(prepared.splits.train)}
    if costs.get("held_out_dev"):
        result["dev_kept_checkpoint"] = costs.get("best_dev", {})
    perturbed = evaluate_perturbed(prepared, predictor, costs, directory)
    if perturbed is not None:
        result["perturbed"] = perturbed
    predictor.save(directory)
    (directory / CONFIG_FILE).write_text(dump_config(config), encoding="utf-8")
    write_json(directory / METRICS_FILE, result)
    write_json(directory / COSTS_FILE, costs)
    write_predictions(directory / PREDICTIONS_FILE, test, outputs)
    return result


def comparable_dev(costs: dict) -> dict:
    """The dev score strategies are compared by: held out from the choice of checkpoint when one was made among
    several evaluations (tunelab.held_out_dev), else the dev score as measured."""
    return costs.get("held_out_dev") or costs.get("best_dev", {})


def evaluate_perturbed(prepared: Prepared, predictor, costs: dict, directory: Path) -> dict | None:
    """Metrics on the perturbed copy of the test split (classification tasks, `data.perturbed_test`).
    Its time is its own cost entry, so `eval_examples_per_second` stays comparable with older runs."""
    config = prepared.config
    if not config.data.perturbed_test or config.task.type not in PERTURBED_TASKS:
        return None
    examples = perturbed_copy(prepared.splits.test, config.train.seed, text_keys(config.task))
    clock = score_cache.Stopwatch()
    outputs = predictor.predict(examples)
    costs["perturbed_eval_seconds"] = clock.seconds()
    write_predictions(directory / PERTURBED_PREDICTIONS_FILE, examples, outputs)
    return score(config, examples, outputs)


def score(config: ExperimentConfig, examples: list[dict], outputs: list[dict]) -> dict:
    references = [reference_of(example, config) for example in examples]
    predictions = [output["prediction"] for output in outputs]
    return compute_metrics(config.metrics, predictions, references, labels=config.task.label_names)


def reference_of(example: dict, config: ExperimentConfig) -> str | list[str]:
    if config.task.type == "extractive_qa":
        return example["answer_texts"]  # every gold answer: squad_em / squad_f1 take the best match
    # token classification: the IOB2 tags joined by spaces (tunelab.data.tokens)
    return example["target"] if config.task.type in ("generation", "token_classification") else example["label"]


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def write_predictions(path: Path, examples: list[dict], outputs: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for example, output in zip(examples, outputs):
            row = {k: v for k, v in example.items() if not k.startswith("_")}
            row.update(output)
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------
# Reusing a finished run


def load_run(run_dir: Path):
    """(config, strategy, predictor) rebuilt from a finished run directory."""
    config, strategy = read_run(run_dir)
    return config, strategy, load_predictor(strategy, run_dir)


def read_run(run_dir: Path):
    """(config, strategy) of a finished run, every check that needs no weights done (config, artifact kept)."""
    run_dir = Path(run_dir)
    config_file = run_dir / CONFIG_FILE
    if not config_file.is_file():
        raise UserError(f"{run_dir} is not a finished tunelab run directory (no {CONFIG_FILE})")
    config = validate_experiment(read_run_config(run_dir), source=str(config_file))
    if config.multitask is not None:
        from tunelab.training.multitask import refuse_reuse

        refuse_reuse(config, run_dir)
    if config.continual is not None:
        from tunelab.training.continual import refuse_reuse as refuse_continual

        refuse_continual(run_dir)
    check_artifact_kept(run_dir)
    info = get_strategy(config.strategy.name)
    settings = validate_settings(info.cls.Settings, config.strategy.options(), ("strategy",), str(config_file))
    return config, info.cls(settings, config, config.task.label_names)


def read_run_config(run_dir: Path) -> dict:
    """The raw mapping in the run's config.yaml; a file that is no longer YAML means a damaged run directory."""
    path = run_dir / CONFIG_FILE
    damaged = (f"the run directory {run_dir} is damaged; restore its {CONFIG_FILE} (from a backup, or undo the edit) "
               f"or run the experiment again")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        # where an unclosed bracket or quote opened beats where the parser gave up (often the end of the file)
        mark = getattr(err, "context_mark", None) or getattr(err, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
        raise ConfigError(f"{path}{line}: not valid YAML ({problem}): {damaged}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason}): {damaged}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: holds {type(raw).__name__}, not the mapping of sections tunelab writes: {damaged}")
    return raw


def load_predictor(strategy, run_dir: Path):
    """The strategy's predictor; a file of the artifact gone missing is the user's to fix, not a traceback."""
    try:
        return strategy.load(Path(run_dir))
    except FileNotFoundError as err:
        # safetensors' error carries the path only in its text: "No such file or directory: <path>"
        missing = err.filename or str(err).split(": ", 1)[-1]
        raise missing_artifact(run_dir, missing) from None


def predict_examples(run_dir: Path, predictor, examples: list[dict]) -> list[dict]:
    """predictor.predict; a config problem only new examples reveal (a template failing on one) names the run's config."""
    try:
        return predictor.predict(examples)
    except ConfigError as err:
        raise ConfigError(f"{Path(run_dir) / CONFIG_FILE}: {err}") from None


def evaluate_run(run_dir: Path, data_file: str) -> dict:
    config, strategy = read_run(run_dir)
    examples = load_split(data_file, config.task, "evaluation", config.task.label_names)  # before any weights load
    outputs = predict_examples(run_dir, load_predictor(strategy, run_dir), examples)
    return {"metrics": score(config, examples, outputs), "num_examples": len(examples)}
