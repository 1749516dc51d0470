"""Which process this is when several train together (`torchrun`), and the model under its DDP wrapper.

A leaf module (no tunelab import, no transformers): `train`, `callbacks`, `run` and the CLI all ask it.
"""

from __future__ import annotations

import os


def world_size() -> int:
    """Processes training together (torchrun sets WORLD_SIZE); 1 without a launcher."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0 writes the run directory and prints; the other ranks only train."""
    return int(os.environ.get("RANK", "0")) == 0


def unwrap(model):
    """The model inside a DistributedDataParallel wrapper (its `.module`), or the model itself."""
    return getattr(model, "module", model)
