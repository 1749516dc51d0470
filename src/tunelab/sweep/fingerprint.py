"""Content fingerprints of the data files a cell reads, stored in its `cell.json`.

They let a resumed sweep tell "the same data at a new path" (a moved or copied project: finished
cells still count) from "other data at the same path" (an edited file: finished cells are stale and
the sweep refuses to mix them with new ones).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SPLITS = ("train", "dev", "test")


def file_sha256(path: str) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None  # a missing file is reported by the data check, with its location
    return digest.hexdigest()


def data_fingerprints(data: dict, cache: dict[str, str | None]) -> dict[str, str]:
    """split → sha256 of its local file (hf: datasets are identified by name only)."""
    out = {}
    for split in SPLITS:
        path = data.get(split)
        if not path or str(path).startswith("hf:"):
            continue
        key = str(Path(path).resolve())
        if key not in cache:
            cache[key] = file_sha256(key)
        if cache[key]:
            out[split] = cache[key]
    return out


def cell_fingerprints(config: dict, cache: dict[str, str | None]) -> dict[str, str]:
    """The experiment's splits, and each task's (`tasks:` lists) under `<task>:<split>`."""
    out = data_fingerprints(config.get("data") or {}, cache)
    for entry in config.get("tasks") or []:
        merged = {**(config.get("data") or {}), **(entry.get("data") or {})}
        out.update({f"{entry['name']}:{k}": v for k, v in data_fingerprints(merged, cache).items()})
    return out


def reconcile_data(stored_config: dict, stored_prints: dict, expected_config: dict, expected_prints: dict) -> list[str]:
    """Accept moved data (same content, new path) by copying the new path into `stored_config`; return
    the splits whose content changed, as change descriptions."""
    changes = []
    stored_data, expected_data = stored_config.get("data") or {}, expected_config.get("data") or {}
    for split in SPLITS:
        old, new = stored_prints.get(split), expected_prints.get(split)
        if not (old and new):
            continue
        if old == new:
            stored_data[split] = expected_data.get(split)
        else:
            changes.append(f"data.{split}: the file's content changed since the cell ran (sha256 {old[:12]} → {new[:12]})")
    for key in sorted(set(stored_prints) & set(expected_prints) - set(SPLITS)):  # a task's split (`task:split`)
        if stored_prints[key] != expected_prints[key]:
            changes.append(f"{key}: the file's content changed since the cell ran")
    return changes
