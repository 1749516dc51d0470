"""`head`: a new classification head on the model reads the label (classifier and the head strategies).

Any model serves (encoder or decoder): the head is new, so it trains. How the head reads the
sentence is its pooling choice (`model.pooling`: `cls`, the model's own [CLS] pooler / last token,
or `mean`, a masked mean of the token states; `tunelab.pooling`). Its inputs are encoded by
`readouts/classification.py`.
"""

from __future__ import annotations

import warnings

from tunelab.readouts.registry import register

POOLINGS = ("cls", "mean")


@register("head", "a new classification head reads the label (pooling: model.pooling cls | mean)", pairing="head",
          used_by="classifier and the head strategies (head, full, partial, bitfit, adapter, lora, ...)")
class ClassificationHead:
    def check(self, experiment, strategy: str) -> None:
        """Any model takes a new head; `model.pooling: mean` is checked when the model is built."""


def choose_pooling(model, path: str, requested: str | None, shown: str) -> None:
    """Apply the pooling asked for (else the one a saved tunelab model recorded, else cls) to a freshly
    loaded sequence-classification model; warn when a mean-pooling checkpoint would be read by [CLS]."""
    from tunelab.pooling import apply_pooling, pooling_of, trained_for_mean_pooling

    pooling = pooling_of(requested, model.config)
    if pooling == "cls" and requested is None and trained_for_mean_pooling(path):
        warnings.warn(f"{shown} was trained for mean pooling and its [CLS] pooler was not: a classification head "
                      "on it learns little unless the encoder trains too. Set model.pooling: mean (or cls to keep "
                      "this and silence the warning)", stacklevel=3)
    apply_pooling(model, pooling)
