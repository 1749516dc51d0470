"""Moved to `tunelab.model_changes.selection`; kept so existing imports still work."""

from tunelab.model_changes.selection import (  # noqa: F401
    EMBEDDING_HINTS,
    HEAD_MODULES,
    LAYER_INDEX,
    freeze_all,
    is_embedding,
    is_head,
    layer_index,
    num_layers,
    unfreeze,
)
