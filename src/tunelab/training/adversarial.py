"""Adversarial training on the input embeddings (`train.adversarial`): FGM, PGD and FreeLB.

The perturbation δ is added to the *output* of the model's input-embedding module (a forward hook
on `get_input_embeddings()`), never to the embedding matrix: it works when the embeddings are
frozen (LoRA and the other PEFT methods, bitfit, head, pet, sft) and changes no weight.

Shapes: e, the embedding output, is (B, T, H); δ has its shape; norms are per example, over (T, H).
With L the training loss, g = ∂L/∂e at the current δ and ĝ = g / ‖g‖ (per example):

- FGM (Miyato et al. 2017):  δ = ε·ĝ(x);  loss = L(x) + L(x + δ).  ‖δ‖ = ε for every example.
- PGD (Madry et al. 2018):   δ₀ = 0, δₜ = Π_ε(δₜ₋₁ + α·ĝ(x + δₜ₋₁)), t = 1..K;  loss = L(x) + L(x + δ_K).
- FreeLB (Zhu et al. 2020):  the same ascent;  loss = L(x) + (1/K)·Σₜ L(x + δₜ): the parameter
  gradient is accumulated over the K ascent steps. (δ₀ = 0 instead of the paper's random start:
  deterministic, and the first step reuses the clean pass's gradient.)

Π_ε scales an example's δ back onto the L2 ball of radius ε; α = `step_size` (default ε / K). δ is
a constant for the parameter update (no gradient flows through it). Padding gets no gradient, so
the perturbation falls on the real tokens.

The clean and adversarial losses are returned to the Trainer as one scalar: one backward per step
and, across processes (DDP), one gradient all-reduce per step, as without adversarial training;
gradient accumulation divides it like any loss. The gradient w.r.t. δ is read with
`torch.autograd.grad`, which fills no parameter's `.grad` and so triggers no DDP hook (DDP's only
extra collective is its usual small buffer broadcast at each forward pass). Cost per step: 1 + K
forward passes and K extra backward passes down to the embeddings (FGM: K = 1); FreeLB keeps the
K + 1 passes' activations until the backward.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from tunelab.distributed import unwrap
from tunelab.errors import ConfigError


DEFAULT_STEPS = 3
"""Ascent steps of pgd and freelb when `train.adversarial.steps` is not given."""


class EmbeddingShift:
    """Forward hook on the input-embedding module: adds `deltas[i]` to the output of its i-th call in
    one forward pass; without a delta for a call it adds a zero leaf that requires grad (a probe), so
    ∂L/∂e can be read even when the embedding is frozen. `used` holds what was added, in call order."""

    def __init__(self, deltas: list[torch.Tensor] | None = None):
        self.deltas = deltas or []
        self.used: list[torch.Tensor] = []

    def __call__(self, module, args, output):
        index = len(self.used)
        if index < len(self.deltas):
            delta = self.deltas[index]
        else:
            delta = torch.zeros_like(output, requires_grad=True)
        self.used.append(delta)
        return output + delta.to(output.dtype)


@contextmanager
def shifted(embedding: torch.nn.Module, deltas: list[torch.Tensor] | None = None):
    shift = EmbeddingShift(deltas)
    handle = embedding.register_forward_hook(shift)
    try:
        yield shift
    finally:
        handle.remove()


def input_embeddings(model: torch.nn.Module) -> torch.nn.Module:
    """The input-embedding module of the (first) transformers model inside `model` (through DDP,
    PEFT, pet's and sft's loss wrappers)."""
    for module in unwrap(model).modules():
        get = getattr(module, "get_input_embeddings", None)
        if callable(get):
            try:
                embedding = get()
            except (NotImplementedError, AttributeError):
                continue
            if isinstance(embedding, torch.nn.Module):
                return embedding
    raise ConfigError("train.adversarial: the model exposes no input embeddings (get_input_embeddings) to perturb")


def per_example_norm(x: torch.Tensor) -> torch.Tensor:
    """‖x_i‖₂ over every dimension but the first, shaped to broadcast against x: (B, 1, ..., 1)."""
    return x.detach().float().flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))


def ascend(delta: torch.Tensor, grad: torch.Tensor | None, step: float, epsilon: float) -> torch.Tensor:
    """Π_ε(δ + α·g/‖g‖), per example; an example without gradient keeps its δ."""
    delta = delta.detach()
    if grad is not None:
        delta = delta + step * grad.float() / per_example_norm(grad).clamp_min(1e-12)
    scale = (epsilon / per_example_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
    return delta * scale


def adversarial_loss(loss_at, settings) -> tuple[torch.Tensor, object]:
    """(clean + adversarial loss, the clean pass's outputs) by the formulas of the module docstring.

    loss_at(deltas) runs one forward pass with `deltas` added to the embeddings (None: zero probes)
    and returns (loss, outputs, the deltas it used)."""
    method, epsilon = settings.method, float(settings.epsilon)
    steps = 1 if method == "fgm" else int(settings.steps or DEFAULT_STEPS)
    step = epsilon if method == "fgm" else float(settings.step_size or epsilon / steps)
    clean, outputs, deltas = loss_at(None)
    grads = torch.autograd.grad(clean, deltas, retain_graph=True, allow_unused=True)
    adversarial = []
    for t in range(1, steps + 1):
        deltas = [ascend(d, g, step, epsilon).requires_grad_(t < steps) for d, g in zip(deltas, grads)]
        loss, _, _ = loss_at(deltas)
        if method == "freelb" or t == steps:
            adversarial.append(loss)
        if t < steps:  # FreeLB keeps this pass's graph: its loss is part of the total
            grads = torch.autograd.grad(loss, deltas, retain_graph=method == "freelb", allow_unused=True)
    return clean + sum(adversarial) / len(adversarial), outputs


def with_adversarial(base: type, settings):
    """`base` (a Trainer class, maybe regularisation's) with adversarial training around its
    compute_loss; `base` itself when `settings` is None. Evaluation passes stay clean."""
    if settings is None:
        return base

    class AdversarialTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not model.training:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            embedding = input_embeddings(model)

            def loss_at(deltas):
                with shifted(embedding, deltas) as shift:
                    result = base.compute_loss(self, model, dict(inputs), True, num_items_in_batch)
                return result[0], result[1], shift.used

            loss, outputs = adversarial_loss(loss_at, settings)
            return (loss, outputs) if return_outputs else loss

    AdversarialTrainer.__name__ = f"Adversarial{base.__name__}"
    return AdversarialTrainer


def check_trains(strategy_cls, where: str, key: str = "train.adversarial") -> None:
    """Adversarial training (and `key`, any technique of training) needs a strategy that trains (zero_shot,
    few_shot, ... train nothing)."""
    if not getattr(strategy_cls, "trains", True):
        name = getattr(strategy_cls, "strategy_name", strategy_cls.__name__)
        raise ConfigError(f"{where}: {key} applies to strategies that train; {name} trains nothing. "
                          f"Remove it (in a sweep: set it in the `train:` of the entries that train)")
