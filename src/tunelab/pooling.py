"""How an encoder's classification head reads the sentence: the [CLS] pooler or the tokens' mean.

Hugging Face's BERT-style classifiers read `pooler(h[CLS])`. Sentence-transformers checkpoints such
as all-MiniLM-L6-v2 (`minilm-l6`) were trained for the *mean* of the token states instead, and their
pooler never trained: a linear probe on it stays near chance (SST-2, K=16, logistic regression over
5 seeds: [CLS] pooler 54.7, masked mean 65.1). `model.pooling: mean` swaps the pooler for a masked
mean of the last hidden states, keeping the model's own class (so the Trainer, PEFT and
`save_pretrained` work unchanged); the choice is written into the model's config (`tunelab_pooling`)
so that tunelab reloads saved and exported models the same way. Heads that read the first token's
state themselves (RoBERTa, MPNet: `classifier(h)[:, 0]`, no pooler) get the mean in that token's place.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tunelab.errors import ModelError

CONFIG_KEY = "tunelab_pooling"


class MaskedMeanPooler(torch.nn.Module):
    """Mean of the token states where the attention mask is 1; the mask is taken from the encoder's call."""

    def __init__(self):
        super().__init__()
        self.mask: torch.Tensor | None = None

    def remember_mask(self, module, args, kwargs) -> None:
        # The pooler is called with the hidden states only: read the mask when the encoder is called.
        self.mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        mask, length = self.mask, hidden_states.shape[1]
        if mask is not None and mask.dim() == 2 and mask.shape[1] > length:
            mask = mask[:, -length:]  # prefix tuning's mask also covers the prefix, which has no hidden state here
        if mask is None or mask.dim() != 2 or mask.shape[1] != length:
            return hidden_states.mean(dim=1)
        weights = mask.to(hidden_states.dtype).unsqueeze(-1)
        return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def apply_pooling(model: torch.nn.Module, pooling: str) -> None:
    """Switch a sequence-classification model to `pooling` ("cls" leaves it as built)."""
    if pooling == "cls":
        if getattr(model.config, CONFIG_KEY, None):
            setattr(model.config, CONFIG_KEY, "cls")  # a saved mean-pooled model, read as cls on request
        return
    encoder = getattr(model, "base_model", None)
    pooler = MaskedMeanPooler()
    if encoder is not None and getattr(encoder, "pooler", None) is not None:
        encoder.pooler = pooler
    elif encoder is not None and reads_first_token(model):
        encoder.register_forward_hook(FirstTokenMean(pooler), with_kwargs=True)
    else:
        raise ModelError(
            f"model.pooling: mean needs an encoder whose classifier reads a pooler (BERT) or the first token's "
            f"state (RoBERTa, MPNet); {type(model).__name__} reads its own token. Remove model.pooling (or set it to cls)"
        )
    encoder.register_forward_pre_hook(pooler.remember_mask, with_kwargs=True)
    setattr(model.config, CONFIG_KEY, pooling)


def reads_first_token(model: torch.nn.Module) -> bool:
    """RoBERTa-style heads (`dense` then `out_proj`) read `features[:, 0]` of the encoder's output."""
    head = getattr(model, "classifier", None)
    return head is not None and hasattr(head, "dense") and hasattr(head, "out_proj")


class FirstTokenMean:
    """Forward hook on the encoder: the first token's state becomes the masked mean of all of them, so
    a head reading `features[:, 0]` reads the mean (nothing else of the classifier's model reads it)."""

    def __init__(self, pooler: MaskedMeanPooler):
        self.pooler = pooler

    def __call__(self, module, args, kwargs, output):
        hidden = output[0]
        replaced = torch.cat([self.pooler(hidden).unsqueeze(1), hidden[:, 1:]], dim=1)
        if isinstance(output, tuple):
            return (replaced,) + output[1:]
        output["last_hidden_state"] = replaced
        return output


def pooling_of(requested: str | None, model_config) -> str:
    """The pooling to apply: the one asked for, else what a saved tunelab model recorded, else cls."""
    return requested or getattr(model_config, CONFIG_KEY, None) or "cls"


def trained_for_mean_pooling(path: str) -> bool:
    """A sentence-transformers folder says so in `1_Pooling/config.json`."""
    config = Path(path) / "1_Pooling" / "config.json"
    try:
        return bool(json.loads(config.read_text(encoding="utf-8")).get("pooling_mode_mean_tokens"))
    except (OSError, ValueError):
        return False
