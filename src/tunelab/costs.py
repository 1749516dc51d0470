"""Cost figures every run records: trainable parameters, time, peak memory, throughput."""

from __future__ import annotations

import resource
import sys

import torch

from tunelab.models import count_parameters


def parameter_costs(model: torch.nn.Module) -> dict:
    trainable, total = count_parameters(model)
    return {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": 100.0 * trainable / max(total, 1),
    }


def peak_memory_mb(device: torch.device | str | None = None) -> float:
    """Peak GPU memory allocated on CUDA; peak resident memory of the process (max RSS) on CPU."""
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
