"""Where the bundled demo data lives, so examples and tests find it in a checkout or an install."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from tunelab.errors import DataError

DEMO_SPLITS = ("train", "dev", "test")


def demo_data_dir() -> Path:
    """Folder holding the demo JSONL files (``sentiment_{train,dev,test}.jsonl``)."""
    # The package is installed as plain files (src layout, setuptools), so the resource is a real
    # folder; Path() turns the Traversable into something open()/datasets accept.
    return Path(str(files("tunelab") / "demo_data"))


def demo_split_path(split: str) -> Path:
    """Path of one demo sentiment split: ``train`` (64), ``dev`` (16) or ``test`` (48 examples)."""
    if split not in DEMO_SPLITS:
        raise DataError(f"unknown demo split {split!r}; choose one of {', '.join(DEMO_SPLITS)}")
    return demo_data_dir() / f"sentiment_{split}.jsonl"
