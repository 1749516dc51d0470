"""`choices`: a multiple-choice example's prompt, then each of its own choices, scored by the causal LM's
log-likelihood (summed, or per token / character); the best-scoring choice is the answer. On a classification
task `pet_choices` reads the verbalizer's label words this way, every token of each.

What `zero_shot` and `few_shot` read on multiple-choice tasks without training, and what `pet_choices`
trains through (cross-entropy over the choices). The scoring lives in `tunelab.scoring` (prompting) and
`methods/choice_model.py` (training); both split prompt and choice into tokens alike.
"""

from __future__ import annotations

from tunelab.readouts.registry import register


@register("choices", "each example's own choices (or a classification task's label words, whole) after the prompt, "
                     "scored by the causal LM's log-likelihood",
          pairing="lm", lm_heads=("causal_lm",),
          used_by="pet_choices (train: an lm change); zero_shot, few_shot on multiple-choice tasks (train: none)")
class Choices:
    def check(self, experiment, strategy: str) -> None:
        from tunelab.prompts.plan import check_causal_lm

        check_causal_lm(experiment, strategy)
