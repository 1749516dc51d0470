"""A searched row's dev score held out from the search's own choice, as tunelab.held_out_dev does for epochs.

`search:` keeps the combination with the best mean dev metric over seeds, and that mean is the largest of
several noisy scores on the same dev examples: a row searched over three learning rates looks better on dev
than it is. When every cell of the search kept its dev outputs (`dev_predictions.jsonl`), the row's dev
score is cross-fitted instead: each seed's dev split is dealt into folds (stratified by label, fixed by the
seed, as tunelab.held_out_dev deals them); each fold is scored by the combination with the best mean over
seeds on the other folds; each seed's dev metric is that of those out-of-fold predictions. Which combination
the row shows (and tests) stays the one chosen on the whole dev splits. Only stored files are read; never test.
"""

from __future__ import annotations

import numpy as np

from tunelab.held_out_dev import FOLDS, stratified_folds
from tunelab.metrics import compute_metrics


def by_seed(combos: dict[str, list]) -> dict[str, dict[int, list[dict]]] | None:
    """combination → seed → its dev rows; None unless every combination has every seed's rows, on one dev split."""
    table = {key: {c.meta["seed"]: c.dev_predictions() for c in cells} for key, cells in combos.items()}
    seeds = set.intersection(*(set(seeds) for seeds in table.values()))
    if not seeds or any(set(s) != seeds or any(rows is None for rows in s.values()) for s in table.values()):
        return None
    for seed in seeds:
        golds = {tuple(r.get("label") for r in table[key][seed]) for key in table}
        if len(golds) != 1 or not next(iter(golds)):
            return None  # not the same dev examples in the same order: no like-for-like choice
    return table


def held_out_search_dev(combos: dict[str, list], metric: str, labels: list[str] | None,
                        higher_is_better: bool = True) -> dict[int, float] | None:
    """seed → the cross-fitted dev metric of the search (see the module doc), or None without the dev outputs."""
    if len(combos) < 2:
        return None
    table = by_seed(combos)
    if table is None:
        return None
    sign = 1 if higher_is_better else -1
    first = next(iter(table.values()))
    folds = {}
    for seed, rows in first.items():
        gold = [r["label"] for r in rows]
        folds[seed] = stratified_folds(np.unique(gold, return_inverse=True)[1], seed, min(FOLDS, len(gold)))

    def score(rows: list[dict], mask) -> float:
        kept = [r for r, keep in zip(rows, mask) if keep]
        return compute_metrics([metric], [r["prediction"] for r in kept], [r["label"] for r in kept], labels=labels)[metric]

    def chosen_without(f: int) -> str:
        means = {key: np.mean([score(rows, folds[s] != f) for s, rows in seeds.items()]) for key, seeds in table.items()}
        return max(means, key=lambda key: sign * means[key])  # a tie keeps the first combination, as the search does

    chosen = {f: chosen_without(f) for f in range(max(int(fold.max()) for fold in folds.values()) + 1)}
    held = {}
    for seed, fold in folds.items():
        rows = [table[chosen[int(f)]][seed][i] for i, f in enumerate(fold)]
        held[seed] = score(rows, [True] * len(rows))
    return held
