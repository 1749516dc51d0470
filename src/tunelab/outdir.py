"""Output directories: check, before any data or weights load, that a run or sweep directory can be created.

`mkdir` would find the same problems, but only after minutes of work in some commands and as a raw
traceback. The check creates nothing that stays: it probes writability with a temporary directory
that it removes at once (permission bits alone say nothing for root, e.g. under /proc).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tunelab.errors import UserError


def check_output_dir(path: Path, named: str, fix: str, *, may_exist: bool) -> None:
    """Raise UserError unless `path` is (or can become) a directory we can write into.

    `named` says where the path came from (e.g. "--out /x"), `fix` how to choose another. An existing
    directory is fine only when `may_exist` (a sweep resumes into it); a run refuses it elsewhere.
    """
    path = Path(path)
    if path.is_dir():
        if may_exist:
            probe_writable(path, path, named, fix)
        return
    if path.exists() or path.is_symlink():
        raise UserError(f"{named}: {path} is an existing file, not a directory; {fix}")
    ancestor = existing_ancestor(path)
    if not ancestor.is_dir():
        raise UserError(f"{named}: cannot create {path} because a parent, {ancestor}, is a file, not a directory; {fix}")
    probe_writable(ancestor, path, named, fix)


def existing_ancestor(path: Path) -> Path:
    """The nearest ancestor of `path` that exists (a directory or, wrongly, a file)."""
    for parent in Path(os.path.abspath(path)).parents:
        if parent.exists():
            return parent
    return Path("/")


def probe_writable(directory: Path, path: Path, named: str, fix: str) -> None:
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".tunelab-write-check-", dir=directory))
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UserError(f"{named}: cannot create {path}: {directory} is not writable "
                        f"(creating a directory there failed: {reason}); {fix}") from None
