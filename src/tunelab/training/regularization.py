"""Regularisation that composes with every strategy that trains (`train.label_smoothing`,
`train.dropout`, `train.rdrop_alpha`; weight decay stays `train.weight_decay`, handed to the optimizer).

- Label smoothing: cross-entropy against (1-ε)·one-hot + ε/L (torch's `label_smoothing=`).
- Dropout overrides: the model config's dropout fields AND the already-built dropout modules
  (a config edit after loading changes no module), by kind — `hidden`, `attention`, `classifier`.
- R-Drop (Liang et al. 2021): the batch runs twice with independent dropout masks (one forward pass
  of the batch stacked on itself); loss = mean of both cross-entropies + α · symmetric KL between
  the two predictive distributions, KL(p1‖p2) + KL(p2‖p1), averaged over the batch.

With all three at their defaults nothing here runs and training is exactly what it was.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunelab.errors import ConfigError

DROPOUT_FIELDS = {
    "hidden": ("hidden_dropout_prob", "hidden_dropout", "resid_pdrop", "embd_pdrop", "dropout"),
    "attention": ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop"),
    "classifier": ("classifier_dropout", "seq_classif_dropout"),
}
"""Config fields, by kind, that set a dropout probability."""


def dropout_fields(config, kind: str) -> list[str]:
    return [f for f in DROPOUT_FIELDS[kind] if hasattr(config, f)]


def check_dropout(config, dropout: dict, where=lambda key: "") -> None:
    """Refuse a kind the architecture has no dropout for (read from its config, before weights load).
    `classifier` falls back to the hidden dropout in many heads, so a config with hidden dropout takes it."""
    for kind in dropout or {}:
        if kind not in DROPOUT_FIELDS:
            raise ConfigError(f"{where(kind)}train.dropout.{kind}: unknown; choose from {', '.join(DROPOUT_FIELDS)}")
        fields = dropout_fields(config, kind) or (dropout_fields(config, "hidden") if kind == "classifier" else [])
        if not fields:
            raise ConfigError(f"{where(kind)}train.dropout.{kind}: {type(config).__name__} has no {kind} dropout "
                              f"(its config sets none of {', '.join(DROPOUT_FIELDS[kind])})")


def module_kind(path: str, parent: torch.nn.Module, top: torch.nn.Module) -> str:
    """Which kind a dropout module is, from where it sits."""
    parent_name = type(parent).__name__
    if parent is top or "Classification" in parent_name or "Head" in parent_name or "classifier" in path:
        return "classifier"
    if "Attention" in parent_name and "Output" not in parent_name:
        return "attention"
    return "hidden"


def apply_dropout(model: torch.nn.Module, dropout: dict | None) -> dict:
    """Set dropout probabilities on a loaded model, config and modules; returns {kind: modules changed}."""
    if not dropout:
        return {}
    from tunelab.distributed import unwrap

    top = unwrap(model)
    base = getattr(top, "get_base_model", lambda: top)()  # under PEFT: the transformers model
    config = getattr(base, "config", None)
    if config is not None:
        check_dropout(config, dropout)
        for kind, p in dropout.items():
            for name in dropout_fields(config, kind):
                setattr(config, name, p)
    changed = {kind: 0 for kind in dropout}
    for path, parent in base.named_modules():
        for child_name, child in parent.named_children():
            if isinstance(child, torch.nn.Dropout):
                kind = module_kind(f"{path}.{child_name}", parent, base)
                if kind in dropout:
                    child.p = float(dropout[kind])
                    changed[kind] += 1
        # Attention written as a float attribute (Llama and most decoders): the probability itself.
        if "attention" in dropout and isinstance(getattr(parent, "attention_dropout", None), float):
            parent.attention_dropout = float(dropout["attention"])
            changed["attention"] += 1
    return changed


ABSENT_BELOW = -1.0e8
"""Logits below this mark slots a row does not have (a question with fewer choices than the batch's widest scores
them -1e9, `methods.choice_model.PAD_SCORE`): label smoothing spreads its mass over the slots a row has."""


def smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """torch's label-smoothed cross-entropy, (1-ε)·NLL + ε·mean over classes of -log p, where each row's mean
    runs over its own slots only: ε/C on a padded slot (log p ≈ -1e9) would swamp the loss."""
    present = logits > ABSENT_BELOW
    if not smoothing or bool(present.all()):
        return F.cross_entropy(logits, labels, label_smoothing=smoothing)
    log_p = logits.log_softmax(-1)
    nll = -log_p.gather(1, labels[:, None]).squeeze(1)
    uniform = -(log_p * present).sum(-1) / present.sum(-1)
    return ((1 - smoothing) * nll + smoothing * uniform).mean()


def regularized_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0,
                     rdrop_alpha: float = 0.0) -> torch.Tensor:
    """Cross-entropy (label-smoothed); with `rdrop_alpha` the rows are two stacked copies of the batch
    (first half, second half) and the R-Drop KL term is added."""
    logits = logits.float()
    if not rdrop_alpha:
        return smoothed_cross_entropy(logits, labels, label_smoothing)
    first, second = logits.chunk(2)
    ce = (smoothed_cross_entropy(first, labels, label_smoothing)
          + smoothed_cross_entropy(second, labels, label_smoothing)) / 2
    log_p, log_q = first.log_softmax(-1), second.log_softmax(-1)
    kl = (F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")     # KL(p‖q)
          + F.kl_div(log_p, log_q, log_target=True, reduction="batchmean"))  # KL(q‖p)
    return ce + rdrop_alpha * kl


def uses_regularized_loss(cfg) -> bool:
    return bool(cfg.label_smoothing or cfg.rdrop_alpha)


def trainer_class(cfg):
    """The Trainer to train with: transformers' own, or (label smoothing / R-Drop) one whose
    compute_loss calls `regularized_loss` on the label logits while training."""
    from transformers import Trainer

    if not uses_regularized_loss(cfg):
        return Trainer
    smoothing, alpha = float(cfg.label_smoothing), float(cfg.rdrop_alpha)

    class RegularizedTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not model.training or "labels" not in inputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs = dict(inputs)
            labels = inputs.pop("labels")
            if alpha:  # one pass over the batch stacked on itself: independent dropout masks per copy
                inputs = {k: torch.cat([v, v]) if torch.is_tensor(v) else v for k, v in inputs.items()}
            outputs = model(**inputs)
            logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
            if logits.dim() != 2:
                raise ConfigError("train.label_smoothing and train.rdrop_alpha apply to label read-outs (a head, "
                                  "pet's verbalizer), not to token-level losses such as sft's")
            loss = regularized_loss(logits, labels, smoothing, alpha)
            return (loss, outputs) if return_outputs else loss

    return RegularizedTrainer
