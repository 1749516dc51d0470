"""How the model changes — the first of the two questions every strategy answers (DESIGN.md).

A model change picks what trains and how the result is saved; it knows nothing about how a label
is read out (`tunelab.readouts`), so the same change composes with a classification head (`head`,
`full`, `partial`, `bitfit`, `adapter`, `classifier`) and with an LM read-out (`pet`, `sft`:
`strategy.train`). `none` trains nothing: zero-shot prompting's change, read-out only.
One file per kind, each registered with one `@register(...)` line (see registry.py); any PEFT
strategy (`lora`, `ia3`, `prompt_tuning`, ...) is a model change too, through `peft.py`.
"""

from tunelab.model_changes.registry import (
    ChangeInfo,
    ModelChange,
    Target,
    all_model_changes,
    get_model_change,
    register,
    resolve_change,
)

__all__ = ["ChangeInfo", "ModelChange", "Target", "all_model_changes", "get_model_change", "register", "resolve_change"]
