"""`verbalizer`: a template turns the input into a cloze, the LM's own head scores the verbalizer's
label words at the answer position (the next token of a causal LM, the mask of a masked LM).

What `pet` trains through, and what `zero_shot`, `few_shot` and `prompt_ensemble` read without
training (model change `none`). The scoring itself lives in `tunelab.scoring` (causal, zero/few-shot)
and `methods/pet_model.py` (pet, causal or masked).
"""

from __future__ import annotations

from tunelab.errors import ConfigError
from tunelab.readouts.registry import register


@register("verbalizer", "template + verbalizer: the LM head's scores of the label words at the answer position",
          pairing="lm", lm_heads=("causal_lm", "masked_lm"),
          used_by="pet (train: an lm change); zero_shot, few_shot, prompt_ensemble (train: none, causal LM only)")
class Verbalizer:
    def check(self, experiment, strategy: str) -> None:
        lm_kind(experiment, strategy)


def lm_kind(experiment, strategy: str = "pet") -> str:
    """`causal_lm` or `masked_lm` from the model's facts (no weights); refuses models without an LM head."""
    from tunelab.model_facts import head_facts
    from tunelab.prompts.plan import where

    name = experiment.model.name
    facts = head_facts(name)
    if facts is None:
        return "causal_lm"  # a hub id: load_model says whether it can be fetched
    if facts.lm_head is not None:
        return facts.lm_head
    raise ConfigError(f"{where(experiment, 'model', 'name')}strategy '{strategy}' reads label words with a pretrained LM head, "
                      f"but model '{name}' ({', '.join(facts.architectures) or 'unknown architecture'}) has none (its head would be "
                      "random); use a causal LM such as smollm2-135m or a masked LM checkpoint")
