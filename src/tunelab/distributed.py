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


def leave_process_group() -> None:
    """Destroy the process group Accelerate started, once every rank is here. A rank that exits with it alive
    leaves gloo's worker threads to interpreter teardown, which can abort the process ("terminate called without
    an active exception", exit -6: seen once in this project's two-rank CI test) and fail a run that had finished."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
