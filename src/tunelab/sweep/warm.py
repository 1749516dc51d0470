"""Imported once by the sweep's fork server: every cell process then starts with these loaded.

Importing torch, the Trainer and all strategies takes several seconds; paying it once per sweep
instead of once per cell matters when a sweep has dozens of short cells.
"""

import torch  # noqa: F401
from transformers import Trainer, TrainingArguments  # noqa: F401

import tunelab.sweep.cell  # noqa: F401
from tunelab.methods.registry import load_all

load_all()
