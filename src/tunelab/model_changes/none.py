"""`none`: nothing trains — the pretrained model read as it is (zero-shot prompting's change).

It pairs with the LM read-outs (`verbalizer`, `generation`): `zero_shot`, `few_shot`,
`prompt_ensemble`, `generate` and `cot` are this change × a read-out, without a training recipe.
A strategy that trains (`pet`, `sft`) refuses it before any weight loads. No artifact.
"""

from pathlib import Path

from tunelab.model_changes.registry import register
from tunelab.model_changes.selection import freeze_all
from tunelab.settings import NoSettings


@register("none", "nothing trains: the pretrained model as it is (zero_shot, few_shot, generate: read-out only)",
          readouts=("lm",), trains=False)
class Nothing:
    Settings = NoSettings

    def check(self, settings, target) -> None:
        """Nothing to check."""

    def apply(self, loaded, settings, target):
        freeze_all(loaded.model)
        return loaded.model

    def save(self, model, directory: Path, loaded, settings) -> None:
        """Nothing trained, nothing to write."""

    def load(self, directory: Path, load_base, settings, target):
        loaded = load_base()
        return loaded, loaded.model
