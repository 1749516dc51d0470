"""Shared by the sweep benchmarks: one `tunelab compare` run as a user would type it, timed from outside."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def timed_compare(experiment: Path, out: Path, overrides: list[str]) -> float:
    """Wall seconds of `tunelab compare EXPERIMENT --out OUT OVERRIDES...` (its table is not printed)."""
    command = [str(Path(sys.executable).parent / "tunelab"), "compare", str(experiment), "--out", str(out), *overrides]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def max_test_override(max_test: int) -> list[str]:
    """`data.max_test=N`, or nothing for 0 (the whole test split)."""
    return [f"data.max_test={max_test}"] if max_test else []


def require_sst2(datasets: Path) -> None:
    """Exit with a message (not a traceback) when the benchmark's data is absent."""
    if not (datasets / "sst2" / "train.jsonl").is_file():
        sys.exit(f"SST-2 not found under {datasets} (set --datasets or TUNELAB_DATASETS)")
