"""The Trainer callbacks of `tunelab.train.train_model`: best dev state, dev lines, evaluation time, CSV log.

A module of their own because importing `TrainerCallback` pulls in much of transformers (and PEFT):
`tunelab.train`, which every strategy module imports, stays light until training starts.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from tunelab.distributed import unwrap


class BestState(TrainerCallback):
    """Keeps the trainable weights of the best dev evaluation in memory; stops after `patience`
    evaluations without improvement. Cheaper than checkpointing whole models to disk each epoch.

    A tie on the metric goes to the lower dev loss: a K-shot dev split of 16 examples has few distinct
    accuracies, and keeping the first of equal scores kept half-trained epoch-1 models (demo, MiniLM
    `full`, seed 3: accuracy 0.6875 at epochs 1, 2 and 4 while the dev loss fell 0.670 → 0.576)."""

    def __init__(self, metric: str, patience: int | None):
        self.metric, self.patience = metric, patience
        self.best_value = -math.inf
        self.best_loss = math.inf
        self.best_metrics: dict = {}
        self.best_epoch: float | None = None
        self.best_weights: dict | None = None
        self.bad_evaluations = 0
        self.stopped_early = False

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):
        key = f"eval_{self.metric}"
        if not metrics or key not in metrics:
            return
        value, loss = metrics[key], metrics.get("eval_loss", math.inf)
        if value > self.best_value or (value == self.best_value and loss < self.best_loss):
            self.best_value, self.best_loss, self.best_epoch, self.bad_evaluations = value, loss, state.epoch, 0
            self.best_metrics = {k.removeprefix("eval_"): v for k, v in metrics.items()}
            self.best_weights = {n: p.detach().clone() for n, p in unwrap(model).named_parameters() if p.requires_grad}
        else:
            self.bad_evaluations += 1
            if self.patience and self.bad_evaluations >= self.patience:
                control.should_training_stop = True
                self.stopped_early = True

    def restore(self, model) -> None:
        if self.best_weights is None:
            return
        params = dict(unwrap(model).named_parameters())
        with torch.no_grad():
            for name, value in self.best_weights.items():
                params[name].copy_(value)


class DevPrinter(TrainerCallback):
    """One readable line per dev evaluation, for logs and terminals without a progress bar."""

    HIDDEN = {"runtime", "samples_per_second", "steps_per_second", "epoch"}

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or not state.is_world_process_zero:
            return
        shown = {k.removeprefix("eval_"): v for k, v in metrics.items() if isinstance(v, (int, float))}
        text = ", ".join(f"{k} {v:.4f}" for k, v in shown.items() if k not in self.HIDDEN)
        print(f"epoch {state.epoch or 0:g}/{args.num_train_epochs:g}  dev: {text}", flush=True)


class EvalClock(TrainerCallback):
    """Time spent evaluating (between the last training step and on_evaluate), to exclude from tokens/s."""

    def __init__(self):
        self.seconds = 0.0
        self.last_step = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.last_step = time.perf_counter()

    def on_evaluate(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.seconds += now - self.last_step
        self.last_step = now


class CsvLog(TrainerCallback):
    """Appends every logged dict (loss, learning rate, eval metrics) to a CSV file, main process only."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        self.rows.append({"step": state.global_step, "epoch": state.epoch, **logs})
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)
