"""`head`: only the newly initialised classification head trains (a linear probe); the pretrained
model stays frozen. Meaningless under an LM read-out, which adds no head: `pet` refuses it.
Artifact: `delta.safetensors` (see delta.py) holding the head's weights."""

from tunelab.model_changes.delta import DeltaChange
from tunelab.model_changes.registry import register
from tunelab.model_changes.selection import freeze_all, head_of, unfreeze


@register("head", "only the new classification head trains; the pretrained model stays frozen", readouts=("head",))
class HeadOnly(DeltaChange):
    def apply(self, loaded, settings, target):
        freeze_all(loaded.model)
        unfreeze(loaded.model, head_of(loaded, target))
        return loaded.model
