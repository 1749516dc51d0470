"""Training glue on the Hugging Face Trainer: dynamic padding, length-grouped batches, the best dev
checkpoint restored, early stopping, clipping, accumulation, schedules, CSV/TensorBoard logs.

The same code runs on one process or several: launched with `torchrun --nproc_per_node N`, the
Trainer (through Accelerate) runs DDP (gloo on CPU, NCCL on GPUs). `TrainConfig.batch_size` is the
global batch, split across processes, so one process and N processes take the same steps.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tunelab.config import TrainConfig
from tunelab.distributed import unwrap, world_size
from tunelab.errors import ConfigError

DevScorer = Callable[[np.ndarray, np.ndarray], dict]  # (logits (N, L), label ids (N,)) → metrics
HOOKS_ATTRIBUTE = "tunelab_train_hooks"


@dataclass
class TrainHooks:
    """What a model change may ask of the training loop, whichever read-out trains it.

    Attached to the changed module (`attach_hooks`), so a classification head, a PET wrapper or an
    answer-loss wrapper around it all train with them and no strategy has to pass them along.
    - optimizer(model, args): builds the optimizer over the *whole* model being trained (the
      Trainer still makes the learning-rate schedule on top of it); e.g. LoRA+'s parameter groups.
    - callbacks: extra TrainerCallbacks (e.g. AdaLoRA's rank re-allocation after each optimiser step).
    - finish(model): runs after the best dev state is restored (e.g. re-apply a final mask).
    """

    optimizer: Callable | None = None
    callbacks: list = field(default_factory=list)
    finish: Callable | None = None


def attach_hooks(module: torch.nn.Module, hooks: TrainHooks) -> None:
    module.__dict__[HOOKS_ATTRIBUTE] = hooks  # a plain attribute: not a submodule, not saved


def attached_hooks(model: torch.nn.Module) -> list[TrainHooks]:
    """The hooks attached to `model` or any module inside it (read from __dict__: PEFT forwards getattr)."""
    return [m.__dict__[HOOKS_ATTRIBUTE] for m in unwrap(model).modules() if HOOKS_ATTRIBUTE in m.__dict__]


@dataclass
class TrainStats:
    train_seconds: float = 0.0
    train_tokens: int = 0
    tokens_per_second: float = 0.0
    examples_per_second: float = 0.0
    steps: int = 0
    epochs: float = 0.0
    best_dev: dict = field(default_factory=dict)
    best_epoch: float | None = None
    stopped_early: bool = False
    held_out_dev: dict = field(default_factory=dict)
    """The dev metrics of checkpoints chosen without the examples they score (tunelab.held_out_dev); empty when
    training evaluated once or was given no read-out of its dev predictions."""
    held_out_epochs: list = field(default_factory=list)
    """Per fold of the dev split, the epoch chosen on the other folds."""
    world_size: int = 1
    ranks: list = field(default_factory=list)
    """One entry per process ({rank, pid, host, steps}), gathered over the process group: proof every rank ran."""


def training_arguments(cfg: TrainConfig, out_dir: Path, has_dev: bool, device: torch.device | None = None):
    from transformers import TrainingArguments

    processes = world_size()
    if cfg.batch_size % processes:
        raise ConfigError(f"train.batch_size={cfg.batch_size} must be divisible by the {processes} processes")
    evaluate = has_dev and cfg.eval_strategy != "no"
    if evaluate and cfg.eval_strategy == "steps" and not cfg.eval_steps:
        raise ConfigError("train.eval_strategy=steps needs train.eval_steps")
    report_to = [name for name in ("tensorboard", "mlflow", "wandb") if name in cfg.log_to]  # the Trainer's own integrations
    return TrainingArguments(
        output_dir=str(out_dir),
        seed=cfg.seed,
        data_seed=cfg.seed,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size // processes,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
        lr_scheduler_type=cfg.lr_scheduler,
        max_grad_norm=cfg.max_grad_norm or 0.0,
        eval_strategy=cfg.eval_strategy if evaluate else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="no",  # the best state is kept in memory (BestState) instead of full checkpoints on disk
        logging_steps=cfg.logging_steps,
        report_to=report_to,
        run_name=run_name(out_dir),
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        disable_tqdm=not cfg.progress_bar,
        use_cpu=(device or torch.device("cpu")).type == "cpu",
        bf16=use_bf16_autocast(cfg, device),
        dataloader_num_workers=0,
        remove_unused_columns=False,
        ddp_find_unused_parameters=False,
        ddp_backend=("nccl" if torch.cuda.is_available() else "gloo") if processes > 1 else None,
    )


def run_name(out_dir: Path) -> str:
    """The run's name for trackers: its directory's name (training writes into `.<name>.partial`, see run.execute)."""
    return Path(out_dir).name.removeprefix(".").removesuffix(".partial")


@contextmanager
def tracking_environment(cfg: TrainConfig, out_dir: Path):
    """Trackers write inside the run directory unless the user pointed them elsewhere: nothing is written
    outside the output directory by default. The Trainer's callbacks read these variables when training
    starts; they are restored afterwards so the next run of the same process gets its own store."""
    settings = tracker_variables(cfg, Path(out_dir).resolve())
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        if "wandb" in cfg.log_to:
            finish_wandb_run()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def tracker_variables(cfg: TrainConfig, out_dir: Path) -> dict[str, str]:
    variables: dict[str, str] = {}
    if "mlflow" in cfg.log_to and not os.environ.get("MLFLOW_TRACKING_URI"):
        # A local file store in `<run>/mlruns`. MLflow 3 keeps its file store in maintenance mode behind this
        # opt-in; its database stores would need SQLAlchemy, which the skinny client lacks.
        variables["MLFLOW_TRACKING_URI"] = (out_dir / "mlruns").as_uri()
        variables["MLFLOW_ALLOW_FILE_STORE"] = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "true")
    if "wandb" in cfg.log_to:
        # Offline unless the user chose a mode (`wandb sync <run>/wandb/offline-run-*` uploads later); files
        # under `<run>/wandb`; no crash reports to W&B's error service from a user's machine.
        variables["WANDB_MODE"] = os.environ.get("WANDB_MODE", "offline")
        for key, folder in (("WANDB_DIR", ""), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "settings"),
                            ("WANDB_DATA_DIR", "data")):  # its service otherwise writes logs into ~/.cache/wandb
            variables[key] = os.environ.get(key, str(out_dir / "wandb" / folder if folder else out_dir))
        variables["WANDB_PROJECT"] = os.environ.get("WANDB_PROJECT", "tunelab")
        variables["WANDB_ERROR_REPORTING"] = os.environ.get("WANDB_ERROR_REPORTING", "false")
        variables["WANDB_SILENT"] = os.environ.get("WANDB_SILENT", "true")
    return variables


def finish_wandb_run() -> None:
    """The Trainer's WandbCallback leaves its run open (and reuses it for the next Trainer of the process):
    close it so its files are complete before the run directory is renamed, and the next run starts its own."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
        wandb.teardown()  # its settings (the directories above) are fixed per service: the next run gets a new one


def use_bf16_autocast(cfg: TrainConfig, device: torch.device | None) -> bool:
    """Mixed precision: fp32 master weights, bf16 compute — on CUDA devices with bf16 support only."""
    on_cuda = device is not None and device.type == "cuda"
    if cfg.mixed_precision == "bf16" and not (on_cuda and torch.cuda.is_bf16_supported()):
        raise ConfigError("train.mixed_precision=bf16 needs a CUDA device with bf16 support (bf16 is very slow on CPUs)")
    return cfg.mixed_precision != "no" and on_cuda and torch.cuda.is_bf16_supported()


def train_model(
    model: torch.nn.Module,
    tokenizer,
    train_features: list[dict],
    dev_features: list[dict],
    cfg: TrainConfig,
    out_dir: Path,
    score_dev: DevScorer,
    metric_for_best: str,
    collator=None,
    dev_readout=None,
) -> TrainStats:
    """Train in place; the model ends holding the best dev state (or the last state without dev).

    With `dev_readout` (a tunelab.held_out_dev.DevReadout) every dev evaluation's label distributions are kept,
    and the stats carry the held-out dev score that strategies are compared by."""
    from transformers import DataCollatorWithPadding

    from tunelab.callbacks import BestState, CsvLog, DevPrinter, EvalClock
    from tunelab.held_out_dev import DevHistory
    from tunelab.training.dev_batches import use_length_batches
    from tunelab.training.regularization import apply_dropout, trainer_class
    from tunelab.training.adversarial import with_adversarial

    if cfg.dropout is not None:
        apply_dropout(model, cfg.dropout.given())

    args = training_arguments(cfg, out_dir, has_dev=bool(dev_features), device=next(model.parameters()).device)
    dev_batches = length_batches_for(dev_features, args.eval_batch_size)
    dev_order = [i for batch in dev_batches for i in batch] if dev_batches else None
    best = BestState(metric_for_best, cfg.early_stopping_patience)
    clock = EvalClock()
    callbacks = [best, clock] + ([CsvLog(out_dir / "logs.csv")] if "csv" in cfg.log_to else [])
    hooks = attached_hooks(model)
    history = DevHistory(dev_readout) if dev_readout is not None and dev_features else None
    callbacks += [callback for h in hooks for callback in h.callbacks]
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(out_dir / "tensorboard")  # read when the Trainer starts
    # regularisation's compute_loss (label smoothing, R-Drop) inside adversarial training's
    trainer = with_adversarial(trainer_class(cfg), cfg.adversarial)(
        model=model,
        args=args,
        train_dataset=train_features,
        eval_dataset=dev_features or None,
        processing_class=tokenizer,
        data_collator=collator or DataCollatorWithPadding(tokenizer),
        compute_metrics=dev_metrics(score_dev, history, dev_order) if dev_features else None,
        callbacks=callbacks,
        optimizers=(make_optimizer(model, args, hooks), None),
    )
    trainer.model_accepts_loss_kwargs = trainer.model_accepts_loss_kwargs and loss_honours_item_count(model)
    if dev_batches:
        use_length_batches(trainer, dev_batches)
    else:
        keep_eval_order(trainer)
    if not cfg.progress_bar:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # it prints raw metric dicts; DevPrinter says the same in one line
        trainer.add_callback(DevPrinter())
    started = time.perf_counter()
    with tracking_environment(cfg, out_dir):
        output = trainer.train()
    elapsed = time.perf_counter() - started
    best.restore(model)
    for h in hooks:
        if h.finish:
            h.finish(model)
    stats = collect_stats(trainer, output, train_features, elapsed - clock.seconds, best)
    stats.ranks = gather_ranks(trainer.state.global_step)
    if history is not None:
        add_held_out(stats, history, trainer, metric_for_best, cfg.seed, out_dir)
    return stats


def length_batches_for(dev_features: list[dict], max_rows: int) -> list[list[int]] | None:
    """Dev batches of similar length (tunelab.training.dev_batches), or None to keep the Trainer's: several
    processes shard the dev set themselves, and features without token ids have no length to sort by."""
    from tunelab.training.dev_batches import length_batches, token_length

    if not dev_features or world_size() > 1 or any("input_ids" not in f for f in dev_features):
        return None
    return length_batches([token_length(f["input_ids"]) for f in dev_features], max_rows)


def dev_metrics(score_dev: DevScorer, history, order: list[int] | None = None):
    """The Trainer's compute_metrics: the strategy's dev metrics, the predictions kept first when asked.
    `order`: the dev examples in the order they were evaluated (None: the split's own); the predictions are
    put back in the split's order first."""
    from transformers import EvalPrediction

    from tunelab.training.dev_batches import in_split_order

    def compute(prediction):
        if order is not None:
            prediction = EvalPrediction(predictions=in_split_order(prediction.predictions, order),
                                        label_ids=in_split_order(prediction.label_ids, order))
        if history is not None:
            history.record(prediction.predictions, prediction.label_ids)
        return score_dev(prediction.predictions, prediction.label_ids)

    return compute


def add_held_out(stats: TrainStats, history, trainer, metric: str, seed: int, out_dir: Path) -> None:
    """The held-out dev score into the stats, its record (halves, choices, distributions) into the run directory."""
    from tunelab.held_out_dev import HELD_OUT_FILE

    history.epochs = [entry["epoch"] for entry in trainer.state.log_history if f"eval_{metric}" in entry]
    held = history.held_out(metric, seed)
    if held is None:
        return
    stats.held_out_dev, stats.held_out_epochs = held.metrics, held.chosen_epochs
    if trainer.is_world_process_zero():
        held.write(Path(out_dir) / HELD_OUT_FILE, metric, history.epochs, history.readout.label_names)


def keep_eval_order(trainer) -> None:
    """Dev predictions in the dev split's order. With `group_by_length` transformers 5 length-groups the evaluation
    batches too, so predictions come back permuted: a plain accuracy is unchanged, but whatever lines predictions
    up with examples is not — pet's average over demonstration sets (row s·D + i is example i of set s) averaged
    different examples, and the held-out dev record would pair distributions with the wrong sentences. Used where
    `length_batches_for` gives no batches of its own (which sort by length and restore the order); several
    processes keep the Trainer's choice."""
    from torch.utils.data import SequentialSampler

    length_grouped = trainer._get_eval_sampler  # the Trainer's (private) hook for this; public API has none

    def sequential(dataset):
        if dataset is None or world_size() > 1:
            return length_grouped(dataset)
        return SequentialSampler(dataset)

    trainer._get_eval_sampler = sequential


def make_optimizer(model, args, hooks: list[TrainHooks]):
    """The optimizer a hook asks for (None: the Trainer's own AdamW); the scheduler stays the Trainer's."""
    factories = [h.optimizer for h in hooks if h.optimizer]
    if len(factories) > 1:
        raise ConfigError("two model changes each ask for their own optimizer; combine them in one")
    return factories[0](unwrap(model), args) if factories else None


def loss_honours_item_count(model) -> bool:
    """Whether the model's loss divides by the `num_items_in_batch` the Trainer passes in.

    transformers' sequence-classification models take `**kwargs` (so the Trainer believes they do)
    but return a plain batch mean. Believing it, the Trainer multiplies their loss by the number of
    processes and skips the division by the accumulation steps: gradients and logged losses grow
    with the process count, and the same command would train differently on 1 and 2 processes.
    """
    from transformers.trainer_utils import unwrap_peft_model

    name = type(unwrap_peft_model(unwrap(model))).__name__
    return not name.endswith(("ForSequenceClassification", "ForMultipleChoice", "ForTokenClassification",
                                      "ForQuestionAnswering"))


def feature_tokens(feature: dict) -> int:
    """Tokens a feature holds: its input's, and its choices' (multiple choice, `pet_choices`)."""
    return len(feature["input_ids"]) + sum(len(ids) for ids in feature.get("choice_ids", ()))


def collect_stats(trainer, output, train_features, train_seconds: float, best) -> TrainStats:
    epochs = float(trainer.state.epoch or 0.0)
    tokens = int(sum(feature_tokens(f) for f in train_features) * epochs)
    examples = len(train_features) * epochs
    train_seconds = max(train_seconds, 1e-9)
    return TrainStats(
        train_seconds=train_seconds,
        train_tokens=tokens,
        tokens_per_second=tokens / train_seconds,
        examples_per_second=examples / train_seconds,
        steps=trainer.state.global_step,
        epochs=epochs,
        best_dev=best.best_metrics,
        best_epoch=best.best_epoch,
        stopped_early=best.stopped_early,
        world_size=world_size(),
    )


def gather_ranks(steps: int) -> list[dict]:
    """Every rank reports (rank, pid, host, steps); all_gather needs every rank to take part."""
    import platform

    mine = {"rank": int(os.environ.get("RANK", 0)), "pid": os.getpid(), "host": platform.node(), "steps": steps}
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [mine]
    gathered: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, mine)
    return gathered

