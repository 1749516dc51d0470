"""Few-shot sampling as in LM-BFF (Gao et al. 2021): K per class for train and for dev, by seed.

Both are drawn, disjoint, from the training pool; the test split is left untouched. Without a test file,
`held_out_test` first sets part of the training file aside as the test split, the same part for every seed.
"""

from __future__ import annotations

import random
from collections import defaultdict

from tunelab.errors import DataError


def few_shot_splits(pool: list[dict], k: int, dev_k: int | None, seed: int, key: str = "label") -> tuple[list[dict], list[dict]]:
    """(train, dev): K per class for train and dev_k per class for dev (0/None → no dev)."""
    dev_k = dev_k or 0
    by_class: dict[str, list[dict]] = defaultdict(list)
    for example in pool:
        by_class[example[key]].append(example)
    rng = random.Random(seed)
    train, dev = [], []
    for label in sorted(by_class):
        members = list(by_class[label])
        if len(members) < k + dev_k:
            raise DataError(
                f"class {label!r} has {len(members)} training examples, fewer than k_shot + dev_k_shot = {k + dev_k}"
            )
        rng.shuffle(members)
        train.extend(members[:k])
        dev.extend(members[k : k + dev_k])
    rng.shuffle(train)
    rng.shuffle(dev)
    return train, dev


def sample_examples(pool: list[dict], n: int, seed: int) -> list[dict]:
    """n examples drawn without replacement (for tasks without classes, e.g. generation)."""
    if len(pool) < n:
        raise DataError(f"asked for {n} examples but the pool has only {len(pool)}")
    return random.Random(seed).sample(pool, n)


HOLD_OUT_SEED = "data.test_fraction"  # one fixed draw: every seed and every cell is scored on the same examples


def held_out_count(size: int, fraction: float) -> int:
    """How many of `size` examples (one class's, or all) go to the test split: the fraction rounded, at least one
    and never all, so that every class with two examples or more is both tested and trained on."""
    return 0 if size < 2 else min(size - 1, max(1, round(fraction * size)))


def held_out_test(examples: list[dict], fraction: float, key: str | None = "label") -> tuple[list[dict], list[dict]]:
    """(rest, test): `fraction` of the examples held out as the test split, per class when `key` names the label
    (stratified), else of all; drawn once with a fixed seed; both parts kept in file order."""
    groups: dict = defaultdict(list)
    for index, example in enumerate(examples):
        groups[str(example[key]) if key else ""].append(index)
    rng, held = random.Random(HOLD_OUT_SEED), set()
    for name in sorted(groups):
        members = groups[name]
        held.update(rng.sample(members, held_out_count(len(members), fraction)))
    return ([e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held])
