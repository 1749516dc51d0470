"""A classification head per task, as disjoint rows of one output layer (multi-task and continual).

The union label space lists every task's labels in task order, named `task:label`; task i owns the
rows offsets[i] .. offsets[i] + len(labels_i) of the classifier's output layer. Each example carries
its task id, and the logits of the other tasks' rows are masked out (set to the dtype's minimum)
before the loss and before prediction, so a task's loss reaches only its own rows (their gradient
is zero on other tasks' examples) while the body below the output layer is shared:

    logits (B, L_total) → masked (B, L_total): row b keeps columns of task task_ids[b] only

Because the head is one ordinary `*ForSequenceClassification` with `num_labels = L_total`, every
model change (full, partial, bitfit, LoRA and the other PEFT methods, adapters) applies to it
unchanged, and so does saving it. The task id is known at test time (the task-incremental setting).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.modeling_outputs import SequenceClassifierOutput

from tunelab.batching import by_length
from tunelab.readouts.classification import encode_classification


@dataclass
class TaskLabels:
    """The union label space: task names, each task's label names, and where its rows start."""

    tasks: list[str]
    labels: list[list[str]]

    @property
    def offsets(self) -> list[int]:
        starts, total = [], 0
        for names in self.labels:
            starts.append(total)
            total += len(names)
        return starts

    @property
    def total(self) -> int:
        return sum(len(names) for names in self.labels)

    @property
    def names(self) -> list[str]:
        """`task:label` for every row of the output layer, in row order."""
        return [f"{task}:{label}" for task, names in zip(self.tasks, self.labels) for label in names]

    def global_id(self, task_index: int, label: str) -> int:
        return self.offsets[task_index] + self.labels[task_index].index(label)

    def rows(self, task_index: int) -> range:
        start = self.offsets[task_index]
        return range(start, start + len(self.labels[task_index]))

    def mask(self, task_index: int) -> torch.Tensor:
        """(L_total,) bool: True on the rows of task `task_index`."""
        keep = torch.zeros(self.total, dtype=torch.bool)
        keep[self.rows(task_index).start : self.rows(task_index).stop] = True
        return keep

    def masks(self) -> torch.Tensor:
        """(T, L_total) bool: one row per task."""
        return torch.stack([self.mask(i) for i in range(len(self.tasks))])


def union_labels(task_runs) -> TaskLabels:
    """The union label space of loaded tasks (`TaskRun`s whose experiments know their label names)."""
    return TaskLabels([run.name for run in task_runs], [list(run.experiment.task.label_names) for run in task_runs])


def encode_task_examples(tokenizer, examples: list[dict], task_index: int, task_labels: TaskLabels,
                         max_length: int) -> list[dict]:
    """Features of one task's examples: tokens, `labels` as rows of the union space, `task_ids`."""
    features = encode_classification(tokenizer, examples, task_labels.labels[task_index], max_length)
    offset = task_labels.offsets[task_index]
    for feature in features:
        if "labels" in feature:
            feature["labels"] += offset
        feature["task_ids"] = task_index
    return features


class TaskMaskedModel(torch.nn.Module):
    """Wraps a sequence classifier over the union label space; masks other tasks' logits per example.

    The forward takes no `**kwargs` on purpose: the Trainer then divides the loss by gradient
    accumulation itself (see `train.loss_honours_item_count`).
    """

    def __init__(self, model: torch.nn.Module, task_labels: TaskLabels):
        super().__init__()
        self.model = model
        self.task_labels = task_labels
        self.register_buffer("task_masks", task_labels.masks(), persistent=False)  # (T, L_total)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, task_ids=None):
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        logits = self.model(**{k: v for k, v in inputs.items() if v is not None}).logits  # (B, L_total)
        logits = self.masked(logits, task_ids)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def masked(self, logits: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        keep = self.task_masks.to(logits.device)[task_ids]  # (B, L_total)
        return logits.masked_fill(~keep, torch.finfo(logits.dtype).min)


def predict_task(model: TaskMaskedModel, tokenizer, examples: list[dict], task_index: int,
                 max_length: int, batch_size: int) -> list[dict]:
    """`{"prediction", "scores"}` per example, scores over the task's own labels (softmax over its rows)."""
    from transformers import DataCollatorWithPadding

    task_labels = model.task_labels
    names, rows = task_labels.labels[task_index], task_labels.rows(task_index)
    features = encode_task_examples(tokenizer, [dict(e, label=None) for e in examples], task_index, task_labels,
                                    max_length)
    collate = DataCollatorWithPadding(tokenizer)
    device = next(model.parameters()).device

    def run(chunk: list[dict]) -> list[dict]:
        batch = {k: v.to(device) for k, v in collate(chunk).items()}
        probs = model(**batch).logits.float()[:, rows.start : rows.stop].softmax(-1)  # (B, L_task)
        out = []
        for row in probs.tolist():
            best = max(range(len(row)), key=row.__getitem__)
            out.append({"prediction": names[best], "scores": dict(zip(names, row))})
        return out

    model.eval()
    with torch.inference_mode():
        return by_length(features, lambda f: len(f["input_ids"]), batch_size, run)


def build_masked_model(strategy, task_labels: TaskLabels):
    """(loaded, masked model, parameter costs): a classification strategy's base model with its model
    change over the union label space, under `TaskMaskedModel` (multi-task and continual runs)."""
    from transformers import set_seed

    from tunelab.costs import parameter_costs
    from tunelab.errors import ConfigError

    exp = strategy.experiment
    set_seed(exp.train.seed)  # the new head's initialisation depends on it
    loaded = strategy.load_base()
    model = TaskMaskedModel(strategy.prepare(loaded), task_labels)
    costs = parameter_costs(model)
    if costs["trainable_params"] == 0:
        raise ConfigError(f"strategy '{exp.strategy.name}' leaves no parameter to train; check its settings")
    return loaded, model, costs
