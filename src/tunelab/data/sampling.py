"""Few-shot sampling as in LM-BFF (Gao et al. 2021): K per class for train and for dev, by seed.

Both are drawn, disjoint, from the training pool; the test split is left untouched.
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
