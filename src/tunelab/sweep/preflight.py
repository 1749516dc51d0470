"""A sweep's last check before its first cell: every distinct strategy set-up prepared as `tunelab run` would.

`runner.check_data` loads each data set-up and `runner.check_models` reads each model's config.json;
this runs `run.prepare` — settings, strategy checks and the checks that need the data and a
tokenizer (a pet template field the data lacks, label words the model cannot tell apart) — once per
set-up, still without loading weights. A mistake every cell of an entry shares then stops the sweep
with exit 2 before anything trains, instead of failing each of those cells when the sweep reaches
it, possibly an hour in. Set-ups differ by everything but the seed and K (which `check_data` covers).
"""

from __future__ import annotations

import copy
import json

from tunelab.errors import UserError

ENTRY_SECTIONS = {"model": "model", "train": "train", "prompt": "prompt", "settings": "strategy"}
"""A sweep entry's sections and the cell config sections they override (sweep/expand.py `cell_config`)."""


def cell_experiment(config, cell, index: int):
    """The cell's validated config (sweep entry `index`), its keys located where the file sets them, so a
    check names the line to fix: the entry's override, the prompt variant, else the experiment's own section."""
    from tunelab.config import validate_experiment

    experiment = validate_experiment(cell.config, source=config.source)
    return experiment.located_at(config.source, cell_lines(config.lines, index, cell.variant))


def cell_lines(lines: dict, index: int, variant: str | None) -> dict:
    """{cell config key: line} from the experiment file's {key: line}; later sources override earlier ones."""
    located = {key: line for key, line in lines.items() if key[:1] not in (("sweep",), ("strategy",))}
    entry = ("sweep", "strategies", index)
    for key, line in lines.items():
        if key[:3] != entry or len(key) < 4:
            continue
        section, rest = key[3], key[4:]
        if section == "name":
            located[("strategy", "name")] = line
        elif section in ENTRY_SECTIONS:
            located[(ENTRY_SECTIONS[section],) + rest] = line
        elif section == "search" and len(rest) == 1:  # "train.learning_rate" → (train, learning_rate)
            first, *more = str(rest[0]).split(".")
            located[(ENTRY_SECTIONS.get(first, first), *more)] = line
    if variant is not None:
        prefix = ("sweep", "prompts", variant)
        located.update({("prompt",) + key[3:]: line for key, line in lines.items() if key[:3] == prefix and len(key) > 3})
    return located


def setup_key(cell) -> str:
    """The cell's config without what only picks the examples (seed, K)."""
    config = copy.deepcopy(cell.config)
    config["train"].pop("seed", None)
    config["data"].pop("k_shot", None)
    return json.dumps(config, sort_keys=True, default=str)


def check_setups(cells: list, experiment_of) -> None:
    """`experiment_of(cell)`: the cell's validated config, located where the file sets its keys."""
    from tunelab.run import prepare

    seen = set()
    for cell in cells:
        key = setup_key(cell)
        if key in seen:
            continue
        seen.add(key)
        try:
            prepare(experiment_of(cell))
        except UserError as err:
            raise type(err)(f"sweep cell {cell.id}: {err}") from None
