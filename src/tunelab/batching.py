"""Inference in batches of similar length: the one loop every predictor and scorer runs.

Sorting by length, longest first, keeps padding per batch small (and the first batch shows at once
whether the longest inputs fit in memory); results come back in the caller's order::

    rows = by_length(features, lambda f: len(f["input_ids"]), 32, lambda chunk: model_rows(chunk))
"""

from __future__ import annotations

from typing import Callable, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def by_length(items: Sequence[Item], length: Callable[[Item], int], batch_size: int,
              run: Callable[[list[Item]], Sequence[Result]], *, longest_first: bool = True) -> list[Result]:
    """`run` on batches of `items`, longest first (or shortest first; ties keep their order); one
    result per item, in the order of `items`. `run(batch)` returns one result per item of `batch`."""
    sign = -1 if longest_first else 1
    order = sorted(range(len(items)), key=lambda i: sign * length(items[i]))
    results: list = [None] * len(items)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        for i, result in zip(chunk, run([items[i] for i in chunk]), strict=True):
            results[i] = result
    return results
