"""What the three registries (strategies, model changes, read-outs) share: one module per entry,
imported so its `@register` line runs, and a lookup whose error names the closest entry."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from pathlib import Path

from tunelab.errors import ConfigError


def import_package_modules(package: str, folder: Path) -> None:
    """Import every module of `package` (whose files are in `folder`) so their @register lines run."""
    for module in pkgutil.iter_modules([str(folder)]):
        importlib.import_module(f"{package}.{module.name}")


def unknown_entry(kind: str, name: str, known: list[str], see: str = "") -> ConfigError:
    """`unknown strategy 'lroa' — did you mean 'lora'? (available: ...)`."""
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f" — did you mean '{match[0]}'?" if match else ""
    return ConfigError(f"unknown {kind} '{name}'{hint} (available: {', '.join(known)}{see})")
