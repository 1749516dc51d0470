"""Candidate scores of an unchanged pretrained LM, kept on disk for a sweep's other cells.

Within one `tunelab compare`, prompting cells often score the very same prompts with the very same
model: `zero_shot` with `calibrate: true` re-reads what plain `zero_shot` scored (calibration only
rescales the scores), a `prompt_ensemble` whose first template is the base prompt repeats it, and
every cell standing for all seeds scores the same dev splits. On SST-2's test split one such
scoring takes SmolLM2-135M about two minutes of 2 CPU cores.

A hit returns exactly what the call would compute: the key holds everything the computation reads
(a fingerprint of the weights, the tokenizer, the prompts and candidates, the batch size, device,
thread count and library versions), so no result depends on whether it was cached. Only strategies
that read the pretrained weights as loaded use it (`zero_shot`, `few_shot`, `prompt_ensemble`); a
trained model never does. The seconds the scores took are stored with them and charged to the cell
that reuses them (`Stopwatch`), so the leaderboard's evaluation speed stays the cost of
computing them, which is what a user who deploys the strategy pays.

The sweep turns it on for its cells (`sweep.reuse_scores`, default true) with `kept_in(root/score_cache)`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

# torch and the scorer are imported where used: `tunelab.run` times with `Stopwatch` without them.

CACHE_DIR = "score_cache"
_directory: Path | None = None
_reused = {"seconds": 0.0}


@contextlib.contextmanager
def kept_in(directory: Path | None):
    """Within the block, pretrained-LM scores are kept in (and read from) `directory`; None: off."""
    global _directory
    previous, _directory = _directory, Path(directory) if directory is not None else None
    try:
        yield
    finally:
        _directory = previous


class Stopwatch:
    """Wall seconds since it started, plus the computing time of the cached scores read since then: what
    the timed work costs without the cache (`seconds`), and how much of it was read (`reused`)."""

    def __init__(self):
        self.started, self.reused_before = time.perf_counter(), _reused["seconds"]

    @property
    def reused(self) -> float:
        return _reused["seconds"] - self.reused_before

    def seconds(self) -> float:
        return time.perf_counter() - self.started + self.reused


def for_pretrained(model, tokenizer) -> ScoreCache | None:
    """A cache for this unchanged pretrained model, or None outside a sweep that keeps scores."""
    return ScoreCache(_directory, model_key(model, tokenizer)) if _directory is not None else None


def model_key(model, tokenizer) -> str:
    """What the scores depend on besides the prompts: weights, tokenizer, numerics."""
    import torch
    import transformers

    device = next(model.parameters()).device
    facts = [type(model).__name__, str(device), str(next(model.parameters()).dtype), torch.get_num_threads(),
             torch.__version__, transformers.__version__, weights_fingerprint(model), tokenizer_fingerprint(tokenizer)]
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()


def weights_fingerprint(model) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes (~0.3 s for SmolLM2-135M on a CPU core)."""
    import torch

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
            raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)  # any dtype, no copy on CPU
            digest.update(memoryview(raw.numpy()))
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    specials = json.dumps(getattr(tokenizer, "special_tokens_map", {}), sort_keys=True, default=str)
    return hashlib.sha256((type(tokenizer).__name__ + specials + text).encode()).hexdigest()


class ScoreCache:
    """`score_requests` through files named by the hash of everything the scores depend on."""

    def __init__(self, directory: Path, key: str):
        self.directory, self.key = Path(directory), key

    def score(self, model, tokenizer, requests: list, *, shared_prefix: str, batch_size: int, stats=None) -> list[list]:
        """`scoring.score_requests`'s rows (per request, a CandidateScore per candidate), read or computed and kept."""
        from tunelab.scoring import score_requests

        path = self.path_for(requests, shared_prefix, batch_size)
        with claimed(path):  # a cell running beside us may be computing these very scores: wait, then read them
            stored = read_entry(path, len(requests))
            if stored is not None:
                rows, seconds = stored
                _reused["seconds"] += seconds
                return rows
            started = time.perf_counter()
            rows = score_requests(model, tokenizer, requests, shared_prefix=shared_prefix, batch_size=batch_size, stats=stats)
            try:
                write_entry(path, rows, time.perf_counter() - started)
            except OSError as err:  # e.g. a full disk: the scores are right, only later cells recompute them
                warnings.warn(f"could not keep scores in {path.parent}: {err}", stacklevel=2)
            return rows

    def path_for(self, requests: list, shared_prefix: str, batch_size: int) -> Path:
        what = [self.key, batch_size, shared_prefix, [[r.context, r.candidates] for r in requests]]
        name = hashlib.sha256(json.dumps(what).encode()).hexdigest()
        return self.directory / name[:2] / f"{name}.json"


@contextlib.contextmanager
def claimed(path: Path):
    """Hold an exclusive lock on the entry's lock file while it is read or computed (`sweep.workers`: cells run
    side by side), so two cells never compute the same scores at once; each holds one entry at a time, so none
    waits on another in a circle. No lock where none can be made (the write then warns)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path.with_suffix(".lock"), "a")
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def read_entry(path: Path, expected_rows: int) -> tuple[list[list], float] | None:
    """(rows, seconds) or None when absent or unreadable (a miss: the scores are computed again)."""
    from tunelab.scoring import CandidateScore

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = [[CandidateScore(float(s), int(n)) for s, n in row] for row in data["scores"]]
        seconds = float(data["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (rows, seconds) if len(rows) == expected_rows else None


def write_entry(path: Path, rows: list[list], seconds: float) -> None:
    """Atomically (temporary file, then rename): cells on other processes may read it at any time.
    JSON keeps floats exactly (shortest repr round-trips)."""
    data = {"seconds": seconds, "scores": [[[s.logprob_sum, s.num_tokens] for s in row] for row in rows]}
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(data, out)
    os.replace(tmp, path)
