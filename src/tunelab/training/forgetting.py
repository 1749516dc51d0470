"""What continual learning adds to plain sequential fine-tuning to forget less (`continual.method`).

- Experience replay: after task t, `buffer_size` of its training examples (drawn by seed) are kept
  and mixed into the training split of every later task.
- EWC (Kirkpatrick et al. 2017), online form (Schwarz et al. 2018): after task t, the diagonal
  empirical Fisher F_t,i = E_(x,y)∈train_t [(∂ log p(y|x) / ∂θ_i)²] is added to the running F and
  θ* becomes the weights after task t; while training later tasks the loss gains
  λ/2 · Σ_i F_i (θ_i − θ*_i)². Only trainable parameters count, so it composes with LoRA & co.
- Learning without forgetting (Li & Hoiem 2017): before task j the model's logits on task j's
  training inputs are recorded; while training j the loss gains α · T² · mean over earlier tasks i
  of KL(softmax(z_old,i / T) ‖ softmax(z_new,i / T)), z_·,i being the logits of task i's head.

The penalties are added by `ContinualLoss`, a module wrapped around the model being trained, so the
ordinary Trainer's loss (the model's own) carries them and no Trainer subclass is needed.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F


# ---------------------------------------------------------------------------------------------
# Replay


def draw_buffer(examples: list[dict], size: int, seed: int, task: str) -> list[dict]:
    """`size` examples of one task's training split, the same ones for the same seed and task."""
    if size > len(examples):
        raise ValueError(f"buffer of {size} examples from a training split of {len(examples)}")
    rng = random.Random(f"replay:{seed}:{task}")
    return [examples[i] for i in sorted(rng.sample(range(len(examples)), size))]


# ---------------------------------------------------------------------------------------------
# EWC


def trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def fisher_diagonal(model: torch.nn.Module, batches) -> dict[str, torch.Tensor]:
    """Empirical diagonal Fisher over trainable parameters: the mean over examples of the squared
    gradient of the example's loss (−log p(y|x)). `batches` yields one-example input dicts with `labels`,
    so each square is of one example's gradient (a batch's gradient squared is not the Fisher)."""
    params = trainable(model)
    fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    was_training, count = model.training, 0
    model.eval()  # no dropout: the Fisher of the model as it predicts
    for batch in batches:
        model.zero_grad(set_to_none=True)
        model(**batch)["loss"].backward()
        for name, p in params.items():
            if p.grad is not None:
                fisher[name] += p.grad.detach().float() ** 2
        count += 1
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {name: f / max(count, 1) for name, f in fisher.items()}


class EwcState:
    """Running Fisher and anchor weights θ*; `penalty(model)` is λ/2 · Σ F_i (θ_i − θ*_i)²."""

    def __init__(self, strength: float):
        self.strength = float(strength)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def consolidate(self, model: torch.nn.Module, fisher: dict[str, torch.Tensor]) -> None:
        """After a task: add its Fisher, and anchor on the weights the model now has."""
        for name, value in fisher.items():
            self.fisher[name] = self.fisher[name] + value if name in self.fisher else value.clone()
        self.anchor = {name: p.detach().clone() for name, p in trainable(model).items()}

    def penalty(self, model: torch.nn.Module) -> torch.Tensor:
        params = trainable(model)
        total = next(iter(params.values())).new_zeros((), dtype=torch.float32) if params else torch.zeros(())
        for name, p in params.items():
            if name in self.fisher:
                total = total + (self.fisher[name] * (p.float() - self.anchor[name].float()) ** 2).sum()
        return self.strength / 2 * total


# ---------------------------------------------------------------------------------------------
# Learning without forgetting


def distillation(new_logits: torch.Tensor, old_logits: torch.Tensor, heads: list[slice], temperature: float) -> torch.Tensor:
    """T² · mean over `heads` of KL(softmax(old/T) ‖ softmax(new/T)), each averaged over the batch.
    Logits are (B, L) over the union label space; each slice is one earlier task's head."""
    if not heads:
        return new_logits.new_zeros(())
    terms = []
    for head in heads:
        log_new = (new_logits[:, head].float() / temperature).log_softmax(-1)
        log_old = (old_logits[:, head].float() / temperature).log_softmax(-1)
        terms.append(F.kl_div(log_new, log_old, log_target=True, reduction="batchmean"))
    return temperature ** 2 * torch.stack(terms).mean()


# ---------------------------------------------------------------------------------------------
# The loss


class ContinualLoss(torch.nn.Module):
    """Wraps a `TaskMaskedModel` being trained: the loss is its cross-entropy on the example's own
    head plus, while training, the EWC penalty and/or the LwF term. LwF reads the earlier tasks'
    heads, which the task mask hides, so the forward takes the unmasked logits and masks them itself.
    Features carry `lwf_logits` (B, L_total) for LwF; `lwf_heads` are the earlier tasks' row slices."""

    def __init__(self, model: torch.nn.Module, ewc: EwcState | None = None, lwf_alpha: float = 0.0,
                 lwf_heads: list[slice] = (), lwf_temperature: float = 2.0):
        super().__init__()
        self.model = model
        self.ewc, self.lwf_alpha, self.lwf_heads, self.lwf_temperature = ewc, lwf_alpha, list(lwf_heads), lwf_temperature

    # Explicit arguments, no **kwargs: the Trainer then averages the loss itself (see train.loss_honours_item_count).
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, task_ids=None,
                lwf_logits=None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        raw = self.model.model(**{k: v for k, v in inputs.items() if v is not None}).logits  # (B, L_total)
        logits = self.model.masked(raw, task_ids)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels)
            if self.training:
                loss = loss + self.extra_loss(raw, lwf_logits)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def extra_loss(self, raw_logits: torch.Tensor, lwf_logits: torch.Tensor | None) -> torch.Tensor:
        extra = raw_logits.new_zeros((), dtype=torch.float32)
        if self.ewc is not None and self.ewc.fisher:
            extra = extra + self.ewc.penalty(self.model)
        if self.lwf_alpha and self.lwf_heads and lwf_logits is not None:
            extra = extra + self.lwf_alpha * distillation(raw_logits, lwf_logits, self.lwf_heads, self.lwf_temperature)
        return extra
