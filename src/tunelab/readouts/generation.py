"""`generation`: the causal LM continues the prompt and the continuation is the answer.

What `sft` trains through, and what `generate` and `cot` read without training (model change
`none`). Decoding lives in `tunelab.generation`.
"""

from __future__ import annotations

from tunelab.readouts.registry import register


@register("generation", "the LM continues the prompt; the generated text is the answer", pairing="lm",
          lm_heads=("causal_lm",), used_by="sft (train: an lm change); generate, cot (train: none)")
class Generation:
    def check(self, experiment, strategy: str) -> None:
        from tunelab.prompts.plan import check_causal_lm

        check_causal_lm(experiment, strategy)
