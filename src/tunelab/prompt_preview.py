"""Which experiment config `tunelab prompt` renders: the file's own strategy, or one sweep entry's first cell.

A file written by `tunelab init` (or any sweep) keeps its prompting strategies under `sweep.strategies`,
each with its own model and settings, while its top-level strategy is a head-based one. `--entry ID`
renders that entry as its first cell (first K, seed, prompt variant and search value) would read it.
Every choice is checked before any model loads.
"""

from __future__ import annotations

from tunelab.config import ExperimentConfig, validate_experiment
from tunelab.errors import UserError
from tunelab.methods import get_strategy


def previews(strategy_name: str) -> bool:
    return callable(getattr(get_strategy(strategy_name).cls, "preview", None))


def preview_config(config: ExperimentConfig, entry: str | None) -> ExperimentConfig:
    """The config whose prompts are shown; UserError (exit 2) naming the entries that have prompts otherwise."""
    if entry is None and previews(config.strategy.name):
        return config
    cells = sweep_cells(config)  # planned once: the choice and every hint read the same cells
    if entry is None:
        raise UserError(f"strategy '{config.strategy.name}' (the file's own strategy) has no prompt to show "
                        f"(a head, or other runs' outputs, give its labels); {entries_hint(cells)}")
    chosen = [cell for cell in cells if entry in (cell.strategy, cell.id)]
    if not chosen:
        raise UserError(f"--entry {entry}: no sweep entry or cell of {config.source} has that id; {entries_hint(cells)}")
    cell = chosen[0]
    if not previews(cell.method):
        raise UserError(f"--entry {entry}: strategy '{cell.method}' has no prompt to show; {entries_hint(cells)}")
    return validate_experiment(cell.config, source=f"{config.source} (sweep cell {cell.id})")


def sweep_cells(config: ExperimentConfig) -> list:
    from tunelab.sweep.runner import plan_sweep

    return plan_sweep(config)[1] if config.sweep else []


def entries_hint(cells: list) -> str:
    labels = list(dict.fromkeys(cell.strategy for cell in cells if previews(cell.method)))
    if not labels:
        return "set strategy.name to a prompting strategy (`tunelab strategies` lists them)"
    return f"pass --entry with one of this file's sweep entries that prompt: {', '.join(labels)}"
