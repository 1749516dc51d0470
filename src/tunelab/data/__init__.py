"""Tasks and data: load splits, validate them against the task, sample K-shot splits."""

from tunelab.data.loaders import load_records
from tunelab.data.sampling import few_shot_splits
from tunelab.data.splits import Splits, load_splits, load_split
from tunelab.data.validate import normalise_records

__all__ = ["Splits", "few_shot_splits", "load_records", "load_split", "load_splits", "normalise_records"]
