"""Which task each training example of a multi-task epoch comes from (`multitask.sampling`).

With n_i training examples in task i (after K-shot sampling), task i is drawn with probability

    proportional:  p_i = n_i / Σ_j n_j
    temperature:   p_i = n_i^(1/T) / Σ_j n_j^(1/T)     (T = 1: proportional; T → ∞: equal)
    equal:         p_i = 1 / number of tasks

An epoch has Σ_j n_j slots (as many examples as the tasks hold together). Each slot draws a task
with p_i, then takes that task's next example from a shuffled pass over it (a new shuffle each
time the pass runs out), so a task sampled above its share repeats its examples and one sampled
below its share sees a subset. Everything is drawn from `random.Random(seed)`: the same seed gives
the same epoch. Examples are drawn one by one (not whole batches per task): the per-example task
mask (`task_heads.TaskMaskedModel`) lets one batch mix tasks.
"""

from __future__ import annotations

import random

SAMPLINGS = ("proportional", "temperature", "equal")


def task_probabilities(sizes: list[int], sampling: str, temperature: float = 1.0) -> list[float]:
    """p_i of each task from its training size n_i (formulas in the module docstring)."""
    if sampling == "equal":
        weights = [1.0 for _ in sizes]
    elif sampling == "proportional":
        weights = [float(n) for n in sizes]
    elif sampling == "temperature":
        weights = [float(n) ** (1.0 / temperature) for n in sizes]
    else:
        raise ValueError(f"unknown sampling '{sampling}' (one of {', '.join(SAMPLINGS)})")
    total = sum(weights)
    return [w / total for w in weights]


def mixture(sizes: list[int], probabilities: list[float], slots: int, seed: int) -> list[tuple[int, int]]:
    """`slots` pairs (task index, example index within the task), drawn as the module docstring says."""
    rng = random.Random(f"multitask:{seed}")  # a string seed: independent of other uses of the integer seed
    passes: list[list[int]] = [[] for _ in sizes]
    order = []
    tasks = rng.choices(range(len(sizes)), weights=probabilities, k=slots)
    for task in tasks:
        if not passes[task]:
            passes[task] = rng.sample(range(sizes[task]), sizes[task])
        order.append((task, passes[task].pop()))
    return order
