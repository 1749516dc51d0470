"""Expand a sweep into cells: K × seed × strategy × prompt variant × hyper-parameter combination.

A cell is one ordinary run: its experiment config is the base experiment with the strategy
entry's overrides, the cell's K, seed, prompt variant and search values applied, and it runs
through `run.prepare` / `run.execute` like `tunelab run` would.
"""

from __future__ import annotations

import copy
import itertools
import random
import re
from pathlib import Path
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from tunelab.config import ExperimentConfig, line_of, validate_experiment, validate_settings, where
from tunelab.errors import ConfigError
from tunelab.run import PERTURBED_TASKS
from tunelab.methods import get_strategy
from tunelab.sweep.schema import StrategyEntry, SweepConfig
from tunelab.training.adversarial import check_trains

# Keys that change how a cell is displayed or logged, not what it computes: ignored when checking
# that a finished cell was run with the configuration the sweep now asks for.
# Keys that change no result. `name` only picks the sweep directory and the report's title: finished cells
# copied into a renamed experiment's sweep (its file extended with more strategies) still count.
COSMETIC = {("name",), ("output_dir",), ("train", "progress_bar"), ("train", "log_to"), ("train", "logging_steps")}


@dataclass(frozen=True)
class Cell:
    id: str
    strategy: str
    """The entry's id (its name unless the entry sets `id:`)."""
    method: str
    """The registered strategy name."""
    family: str
    k_shot: int | None
    seed: int
    variant: str | None
    search: dict = field(default_factory=dict)
    """Values of this cell's hyper-parameter combination (dotted key → value); empty without search."""
    config: dict = field(default_factory=dict)
    """The cell's whole experiment config (JSON-able), already validated."""
    save_artifacts: bool = True
    data_sha256: dict = field(default_factory=dict)
    """split → sha256 of the data file, filled in by the runner (expansion reads no data)."""
    after: tuple[str, ...] = ()
    """The cells whose runs this one reads (a distill cell's teacher, an ensemble's members); they come earlier
    in run order."""
    dev_seeds: tuple[int, ...] = ()
    """A cell that stands for every seed (its result reads none): the seeds whose dev splits score it."""
    reuse_scores: bool = True
    """Whether its prompting strategies read scores another cell computed (`sweep.reuse_scores`)."""

    @property
    def group(self) -> str:
        """Cells of one group differ only in seed and search values: one leaderboard row."""
        return "-".join(p for p in (self.strategy, k_label(self.k_shot), self.variant) if p)

    def meta(self) -> dict:
        return {
            "id": self.id, "group": self.group, "strategy": self.strategy, "method": self.method,
            "family": self.family, "k_shot": self.k_shot, "seed": self.seed, "variant": self.variant,
            "search": self.search, "save_artifacts": self.save_artifacts, "config": self.config,
            "data_sha256": self.data_sha256, "dev_seeds": list(self.dev_seeds),
            "reuse_scores": self.reuse_scores,
        }


def k_label(k: int | None) -> str:
    return "kall" if k is None else f"k{k}"


def expand(config: ExperimentConfig, sweep: SweepConfig) -> list[Cell]:
    """Every cell of the sweep, in run order (K, then seed, then strategy, variant, combination)."""
    base = config.model_dump(mode="json")
    base.pop("sweep", None)
    ks = sweep.k_shot if sweep.k_shot is not None else [config.data.k_shot]
    seeds = sweep.seeds if sweep.seeds is not None else [config.train.seed]
    plans = [entry_plan(config, sweep, index, entry) for index, entry in enumerate(sweep.strategies)]
    cells = []
    for k, seed in itertools.product(ks, seeds):
        for entry, info, variants, combos in plans:
            for variant, (combo_label, combo) in itertools.product(variants, combos):
                raw = cell_config(base, entry, sweep.prompts.get(variant), combo, k, seed)
                seedless = not reads_seed(info, raw["strategy"])
                if seed != seeds[0] and seedless:
                    continue  # same result for every seed: the first seed's cell stands for all
                parts = [entry.label, k_label(k), variant, combo_label, f"seed{seed}"]
                cell_id = "-".join(p for p in parts if p)
                after = link_cells(config, sweep, entry, info, raw, cells)
                cells.append(Cell(cell_id, entry.label, entry.name, info.family, k, seed, variant, combo, raw,
                                  sweep.save_artifacts, after=after, dev_seeds=tuple(seeds) if seedless else (),
                                  reuse_scores=sweep.reuse_scores))
    check_distinct_cells(config, sweep, cells)
    for cell in cells:
        check_cell(cell, config.source)
    return cells


def link_cells(config: ExperimentConfig, sweep: SweepConfig, entry: StrategyEntry, info, raw: dict,
               earlier: list[Cell]) -> tuple[str, ...]:
    """A strategy that reads other entries' cells (`teacher_setting`: distill's `teacher:`, one name; ensemble's
    `members:`, a list) gets each named entry's cell of the same K and seed (its only cell at this K when it runs
    once for all seeds) in `linked_setting`; the ids are returned so executors run those cells first. A single
    value naming no entry is a run directory, left to the strategy to check."""
    setting = getattr(info.cls, "teacher_setting", None)
    value = raw["strategy"].get(setting) if setting else None
    if value is None:
        return ()
    labels = [e.label for e in sweep.strategies]
    index = labels.index(entry.label)
    key = ("sweep", "strategies", index, "settings", setting)
    at = f"{where(config.source, line_of(config.lines, key) or line_of(config.lines, key[:3]))}: " \
         f"sweep.strategies.{index}.settings.{setting}"
    names = value if isinstance(value, list) else [value]
    if not isinstance(value, list) and value not in labels and Path(value).expanduser().is_dir():
        return ()  # a finished run directory: the strategy checks it
    found = [linked_cell(at, name, labels, index, entry, info, sweep, raw, earlier) for name in names]
    linked = getattr(info.cls, "linked_setting", f"{setting}_cell")
    raw["strategy"][linked] = [c.id for c in found] if isinstance(value, list) else found[0].id
    return tuple(c.id for c in found)


def linked_cell(at: str, name: str, labels: list[str], index: int, entry: StrategyEntry, info, sweep: SweepConfig,
                raw: dict, earlier: list[Cell]) -> Cell:
    """The cell of entry `name` that a cell of `entry` at raw's K and seed reads; ConfigError (at `at`) if none."""
    if name not in labels:
        directory = " and no run directory" if getattr(info.cls, "reads_weights", True) else ""
        raise ConfigError(f"{at}: {name!r} names no earlier entry of the sweep ({', '.join(labels[:index]) or 'none before it'})"
                          f"{directory}")
    if getattr(info.cls, "reads_weights", True) and not sweep.save_artifacts:
        raise ConfigError(f"{at}: {name!r} is read from its cells' saved weights, but sweep.save_artifacts is false; "
                          f"set it to true")
    if labels.index(name) >= index:
        raise ConfigError(f"{at}: {name!r} must be an entry listed before {entry.label!r}: its cells run first; move it up")
    k, seed = raw["data"]["k_shot"], raw["train"]["seed"]
    same_k = [c for c in earlier if c.strategy == name and c.k_shot == k]
    found = [c for c in same_k if c.seed == seed] or [c for c in same_k if not reads_seed(get_strategy(c.method), c.config["strategy"])]
    if len(found) != 1:
        raise ConfigError(f"{at}: entry {name!r} makes {len(found)} cells at K={k_label(k)[1:]} and seed {seed} (prompt "
                          f"variants or search values); {entry.label!r} reads one model per entry: give {name!r} an entry "
                          f"of its own without search or variants")
    perturbed = raw["data"].get("perturbed_test") and raw["task"]["type"] in PERTURBED_TASKS
    if not getattr(info.cls, "reads_weights", True) and found[0].seed != seed and perturbed:
        raise ConfigError(f"{at}: entry {name!r} runs once for all seeds, so its outputs on the perturbed test copy (drawn "
                          f"with seed {found[0].seed}) are not this seed's ({seed}); set data.perturbed_test: false")
    return found[0]


def entry_plan(config: ExperimentConfig, sweep: SweepConfig, index: int, entry: StrategyEntry):
    """(entry, registry info, prompt variants, search combinations) with the entry's settings checked."""
    at = ("sweep", "strategies", index)
    try:
        info = get_strategy(entry.name)
    except ConfigError as err:
        line = config.lines.get(at + ("name",)) or line_of(config.lines, at)
        raise ConfigError(f"{where(config.source, line)}: sweep.strategies.{index}: {err}") from None
    validate_settings(info.cls.Settings, entry.settings, at + ("settings",), config.source, config.lines)
    for technique in ("adversarial", "augment"):
        check_technique_entry(config, at, entry, info, technique)
    return entry, info, variants_of(entry, info, sweep), combinations(entry, sweep.search_seed)


def check_technique_entry(config: ExperimentConfig, at: tuple, entry: StrategyEntry, info, technique: str) -> None:
    """`train.<technique>` (adversarial, augment) reaching an entry that trains nothing (zero_shot, ...): exit 2
    where it was set (the entry's `train:`, its `search:`, or the experiment's `train:`), before any cell runs."""
    own = technique in entry.train
    searched = any(key.startswith(f"train.{technique}") for key in entry.search or {})
    if (entry.train[technique] if own else getattr(config.train, technique)) is None and not searched:
        return
    key = at + ("train", technique) if own else at + ("search",) if searched else ("train", technique)
    check_trains(info.cls, where(config.source, line_of(config.lines, key)), f"train.{technique}")


def check_distinct_cells(config: ExperimentConfig, sweep: SweepConfig, cells: list[Cell]) -> None:
    """Two cells with one id would share a folder (the second would count as finished). Entry ids are
    distinct (parse_sweep), so a repeat comes from search values that print alike, e.g. [0.001, 1.0e-3]."""
    repeated = [cell_id for cell_id, count in Counter(c.id for c in cells).items() if count > 1]
    if not repeated:
        return
    index = [entry.label for entry in sweep.strategies].index(next(c.strategy for c in cells if c.id == repeated[0]))
    key = ("sweep", "strategies", index) + (("search",) if sweep.strategies[index].search else ())
    raise ConfigError(
        f"{where(config.source, line_of(config.lines, key))}: {'.'.join(map(str, key))} makes cells with the same id "
        f"more than once ({', '.join(repeated[:3])}{', ...' if len(repeated) > 3 else ''}); make its values distinct "
        f"(a value listed twice, or two spellings of one number) or split the entry into entries with their own `id:`"
    )


def reads_seed(info, strategy: dict) -> bool:
    """Whether a cell's result depends on its seed; strategies that neither train nor sample (zero-shot
    prompting, greedy decoding) say no through `uses_seed(settings)`, and a sweep runs them once."""
    uses_seed = getattr(info.cls, "uses_seed", None)
    if uses_seed is None:
        return True
    try:
        settings = info.cls.Settings.model_validate({k: v for k, v in strategy.items() if k != "name"})
    except ValidationError:
        return True  # check_cell reports the bad setting with its location
    return uses_seed(settings)


def uses_prompt(info) -> bool:
    """Whether a strategy reads the `prompt:` section: its class says so (`uses_prompt`), or its family is a prompt one."""
    declared = getattr(info.cls, "uses_prompt", None)
    return bool(declared) if declared is not None else "prompt" in info.family.lower()


def variants_of(entry: StrategyEntry, info, sweep: SweepConfig) -> list[str | None]:
    choice = entry.prompt_variants
    if choice is None:
        choice = uses_prompt(info)
    if choice is True:
        names = list(sweep.prompts)
    elif choice is False:
        names = []
    else:
        names = list(choice)
    return names or [None]


def combinations(entry: StrategyEntry, search_seed: int) -> list[tuple[str | None, dict]]:
    """(label, {dotted key: value}) per grid point; a random subset with `search_trials`."""
    if not entry.search:
        return [(None, {})]
    keys = list(entry.search)
    grid = [dict(zip(keys, values)) for values in itertools.product(*entry.search.values())]
    if entry.search_trials and entry.search_trials < len(grid):
        rng = random.Random(f"{search_seed}:{entry.label}")
        grid = [grid[i] for i in sorted(rng.sample(range(len(grid)), entry.search_trials))]
    return [(combo_label(combo, index), combo) for index, combo in enumerate(grid)]


def combo_label(combo: dict, index: int) -> str:
    """`learning_rate=0.0001+epochs=5` when every value is short and plain; `hp3` otherwise."""
    parts = []
    for key, value in combo.items():
        text = f"{value:g}" if isinstance(value, float) else str(value)
        if isinstance(value, (dict, list)) or len(text) > 20 or not re.fullmatch(r"[A-Za-z0-9_.-]+", text):
            return f"hp{index}"
        parts.append(f"{key.rsplit('.', 1)[-1]}={text}")
    return "+".join(parts)


def cell_config(base: dict, entry: StrategyEntry, variant: dict | None, combo: dict, k: int | None, seed: int) -> dict:
    raw = copy.deepcopy(base)
    raw["model"].update(entry.model)
    raw["train"].update(entry.train)
    raw["train"]["seed"] = seed
    raw["train"]["progress_bar"] = False  # the sweep has one live display; per-cell bars would fight it
    raw["data"]["k_shot"] = k
    prompt = {**(raw.get("prompt") or {}), **entry.prompt, **(variant or {})}
    raw["prompt"] = prompt or None
    raw["strategy"] = {"name": entry.name, **entry.settings}
    if entry.continual is not None:  # replaced whole: one method's settings are errors under another
        raw["continual"] = dict(entry.continual)
    if entry.multitask is not None:  # e.g. {joint: false}: each task alone, beside the joint model
        raw["multitask"] = {**(raw.get("multitask") or {}), **entry.multitask}
    for key, value in combo.items():
        section, _, rest = key.partition(".")
        target = raw["strategy"] if section == "settings" else raw.setdefault(section, {}) or {}
        set_dotted(target, rest, value)
        if section == "prompt":
            raw["prompt"] = target
    return raw


def set_dotted(node: dict, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        if node.get(part) is None:  # an unset optional section (train.adversarial: null) gets its keys' defaults
            node[part] = {}
        node = node[part]
    node[last] = value


def check_cell(cell: Cell, source: str) -> None:
    """Validate a cell's whole config before anything runs (a bad search value names its cell)."""
    try:
        config = validate_experiment(cell.config, source=f"{source} (sweep cell {cell.id})")
        info = get_strategy(config.strategy.name)
        settings = validate_settings(info.cls.Settings, config.strategy.options(), ("strategy",),
                                     f"{source} (sweep cell {cell.id})")
        check_pairing = getattr(info.cls, "check_pairing", None)  # model change × read-out (pet, sft, classifier)
        if check_pairing is not None:
            check_pairing(settings, config)
    except ConfigError as err:
        raise ConfigError(f"sweep cell {cell.id}{describe(cell)}: {err}") from None


def describe(cell: Cell) -> str:
    return f" (search {', '.join(f'{k}={v!r}' for k, v in cell.search.items())})" if cell.search else ""


ADDED_KEYS = {("train", "label_smoothing"): 0.0, ("train", "rdrop_alpha"): 0.0, ("train", "dropout"): None,
              ("train", "adversarial"): None, ("data", "perturbed_test"): True, ("train", "augment"): None}
"""Keys added to the config after cells may have finished, with the default that means today's training."""
ADDED_KEYS[("data", "max_test_seed")] = None  # the first max_test examples, as before the key existed
ADDED_KEYS.update({("multitask", "joint"): True, ("multitask", "head"): "per_task"})  # multi-task keys added later
ADDED_KEYS.update({("task", "tokens_field"): "tokens", ("task", "tags_field"): "tags",  # token classification
                   ("task", "question_field"): "question", ("task", "context_field"): "context",  # extractive QA
                   ("task", "answers_field"): "answers", ("data", "skip_empty_text"): False})
ADDED_KEYS[("data", "test_fraction")] = None  # a test file, as before the key existed


def config_changes(stored: dict, expected: dict, prefix: tuple = ()) -> list[str]:
    """Dotted keys whose values differ between a finished cell's config and the sweep's, cosmetic keys aside."""
    changes = []
    for key in sorted(set(stored) | set(expected)):
        path = prefix + (key,)
        if path in COSMETIC:
            continue
        a, b = stored.get(key), expected.get(key)
        if key not in stored and path in ADDED_KEYS and b == ADDED_KEYS[path]:
            continue  # a key added since the cell ran, at the default that reproduces what it ran
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_changes(a, b, path)
        elif a != b:
            changes.append(f"{'.'.join(path)}: {a!r} → {b!r}")
    return changes


class PlanOrder:
    """The order the local executor starts cells in (and `--dry-run` lays them out in): plan order, except
    that a cell reading others among these (an ensemble, a distill student) waits until they have ended."""

    def __init__(self, cells: list[Cell]):
        self.queue, self.todo, self.ended = list(cells), {cell.id for cell in cells}, set()

    def __bool__(self) -> bool:
        return bool(self.queue)

    def take(self) -> Cell | None:
        """The next cell that may start now, removed from the queue; None: every cell left reads one still running."""
        cell = next((c for c in self.queue if set(c.after) & self.todo <= self.ended), None)
        if cell is not None:
            self.queue.remove(cell)
        return cell

    def end(self, cell_id: str) -> None:
        self.ended.add(cell_id)
