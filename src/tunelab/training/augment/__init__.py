"""Augmentation of the training split (`train.augment`), composing with every strategy that trains.

    train:
      augment: {method: token_edits | paraphrase | back_translation, copies: 2, ...method settings}

Where it sits in a run (tunelab.run): `prepare` checks what needs no weights (`check_augment`);
`execute` calls `augment_training` once the splits are final — after K-shot sampling drew train and
dev, so an augmented text never reaches dev or test — and right before `strategy.fit`, which gets
`splits.train` + the new examples. Only the `text` field is rewritten: the label (classification),
the target (generation, sft) and the second text of a pair task stay as they are.

The new texts are made once per (training split, augment settings, seed) and cached as JSON under
`<folder holding the run>/.augment-cache/` (for `tunelab run`: `<output_dir>/<name>/`, or the parent
of `--out`; for a sweep: its directory), so a sweep's other strategies and a rerun reuse them. Each
run saves what was added as `augmented.jsonl` (new text, label or target, source example, method).
Outputs that are empty, equal to their source or repeats are dropped; nothing left is an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import replace
from pathlib import Path

from tunelab.data.loaders import SOURCE_KEY
from tunelab.errors import ConfigError, ModelError
from tunelab.training.augment.checks import check_augment, check_augment_scope  # noqa: F401 — for run.prepare

AUGMENTED_FILE = "augmented.jsonl"
CACHE_DIR = ".augment-cache"
CACHE_VERSION = 1  # bump when a method's output for the same settings changes


def generate_copies(method: str, texts: list[str], settings, seed: int, experiment) -> list[list[str]]:
    """Raw outputs of one method, `settings.copies` per text (result[i] for texts[i])."""
    if method == "token_edits":
        from tunelab.training.augment.token_edits import token_edit_copies

        return token_edit_copies(texts, settings.copies, settings, seed)
    if method == "paraphrase":
        from tunelab.training.augment.paraphrase import paraphrase_copies

        return paraphrase_copies(texts, settings.copies, settings, seed, experiment)
    from tunelab.training.augment.backtranslation import back_translation_copies

    return back_translation_copies(texts, settings.copies, settings, seed, experiment)


def normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def keep_new(source: str, outputs: list[str]) -> list[str]:
    """Outputs that add something: not empty, not the source again (case and spacing aside), no repeats."""
    seen, kept = {normal(source)}, []
    for output in outputs:
        if output.strip() and normal(output) not in seen:
            seen.add(normal(output))
            kept.append(output.strip())
    return kept


def model_stamps(augment) -> dict:
    """(name, size, mtime) of the files of each model given as a local directory, so that a model replaced
    in place makes its texts again; names of embedded models and hub ids stand for themselves."""
    names = {"paraphrase": [augment.model], "back_translation": [augment.forward_model, augment.backward_model]}
    stamps = {}
    for name in names.get(augment.method, []):
        folder = Path(name).expanduser()
        if folder.is_dir():
            stamps[name] = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in folder.iterdir() if f.is_file())
    return stamps


def cache_key(config, train: list[dict]) -> str:
    """sha256 of what the new texts depend on: the training split (in order), the settings, their models' files
    and the seed."""
    rows = [[e["text"], e.get("label"), e.get("target")] for e in train]
    augment = config.train.augment
    material = {"version": CACHE_VERSION, "train": rows, "seed": config.train.seed,
                "augment": augment.model_dump(mode="json"), "models": model_stamps(augment)}
    return hashlib.sha256(json.dumps(material, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]


def read_cache(path: Path, size: int) -> list[list[str]] | None:
    try:
        copies = json.loads(path.read_text(encoding="utf-8"))["copies"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or damaged: made again
    return copies if isinstance(copies, list) and len(copies) == size else None


def write_cache(path: Path, config, copies: list[list[str]]) -> None:
    """Atomic (temporary name, then rename): ranks or cells that write the same entry at once are safe."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    entry = {"method": config.train.augment.method, "seed": config.train.seed, "copies": copies}
    tmp.write_text(json.dumps(entry, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def new_texts(config, train: list[dict], cache_root: Path) -> tuple[list[list[str]], bool]:
    """(kept new texts per training example, whether they came from the cache)."""
    path = Path(cache_root) / CACHE_DIR / f"{cache_key(config, train)}.json"
    cached = read_cache(path, len(train))
    if cached is not None:
        return cached, True
    augment = config.train.augment
    texts = [e["text"] for e in train]
    try:
        raw = generate_copies(augment.method, texts, augment, config.train.seed, config)
    except ModelError as err:
        raise ModelError(f"{config.locate('train', 'augment')}: train.augment ({augment.method}): {err}") from None
    copies = [keep_new(text, outputs) for text, outputs in zip(texts, raw)]
    if not any(copies):
        raise ConfigError(
            f"{config.locate('train', 'augment', 'method')}: train.augment.method {augment.method} produced no new "
            f"text for any of the {len(train)} training examples (every output was empty or the same as its input); "
            f"{nothing_hint(augment.method)}")
    write_cache(path, config, copies)
    return copies, False


def nothing_hint(method: str) -> str:
    return {"token_edits": "texts of one word cannot be edited; raise edit_rate or use another method",
            "paraphrase": "try another model or prompt (a model that only repeats its input adds nothing)",
            }.get(method, "check forward_model and backward_model: they must translate, each in its direction")


def augmented_examples(config, train: list[dict], copies: list[list[str]]) -> tuple[list[dict], list[dict]]:
    """(training examples to add, rows of augmented.jsonl): copies of their source with `text` rewritten
    (and the task's own text field, which templates may read)."""
    method, field = config.train.augment.method, config.task.text_field
    examples, rows = [], []
    for index, (source, texts) in enumerate(zip(train, copies)):
        origin = source.get(SOURCE_KEY, f"train example {index + 1}")
        for number, text in enumerate(texts, 1):
            example = {**source, "text": text, SOURCE_KEY: f"{origin} ({method} copy {number})"}
            if field in source:
                example[field] = text
            examples.append(example)
            row = {"text": text, **{k: source[k] for k in ("text_pair", "label", "target") if k in source},
                   "source": origin, "source_text": source["text"], "method": method}
            rows.append(row)
    return examples, rows


def augment_training(config, splits, cache_root: Path, run_dir: Path):
    """(splits with the augmented training split, costs) — `splits` and {} unchanged without `train.augment`.
    Writes `augmented.jsonl` into `run_dir` (the main process only)."""
    if config.train.augment is None:
        return splits, {}
    from tunelab.distributed import is_main_process

    started = time.perf_counter()
    copies, cached = new_texts(config, splits.train, cache_root)
    examples, rows = augmented_examples(config, splits.train, copies)
    if is_main_process():
        with open(Path(run_dir) / AUGMENTED_FILE, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    costs = {"num_augmented": len(examples), "augment_method": config.train.augment.method,
             "augment_cached": cached, "augment_seconds": time.perf_counter() - started}
    return replace(splits, train=list(splits.train) + examples), costs
