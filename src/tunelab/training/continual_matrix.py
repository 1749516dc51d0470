"""The accuracy matrix of a continual run and what is read off it (Lopez-Paz & Ranzato 2017).

`matrix` has T + 1 rows and T columns: row 0 is the model before any training (the baselines b_i),
row j (1..T) the model after training on task j; column i is the main metric on task i's test split.
With R[j][i] = matrix[j][i]:

    average accuracy = 1/T · Σ_i R[T][i]                      (the final model, over all tasks)
    BWT              = 1/(T−1) · Σ_{i<T} (R[T][i] − R[i][i])  (negative: forgetting)
    FWT              = 1/(T−1) · Σ_{i>1} (R[i−1][i] − b_i)    (what earlier tasks did for a task not yet trained)
"""

from __future__ import annotations


def transfer(matrix: list[list[float]]) -> dict:
    """{average_accuracy, bwt, fwt} of a (T+1) × T matrix whose row 0 is the untrained model."""
    tasks = len(matrix[0])
    if len(matrix) != tasks + 1 or any(len(row) != tasks for row in matrix):
        raise ValueError(f"the accuracy matrix must be (T+1) × T, got {len(matrix)} rows of {[len(r) for r in matrix]}")
    final = matrix[tasks]
    average = sum(final) / tasks
    if tasks < 2:
        return {"average_accuracy": average, "bwt": None, "fwt": None}
    bwt = sum(final[i] - matrix[i + 1][i] for i in range(tasks - 1)) / (tasks - 1)
    fwt = sum(matrix[i][i] - matrix[0][i] for i in range(1, tasks)) / (tasks - 1)
    return {"average_accuracy": average, "bwt": bwt, "fwt": fwt}


def matrix_table(tasks: list[str], matrix: list[list[float]], metric: str) -> str:
    """The matrix as aligned text (×100), one line per row, then the transfer figures."""
    width = max(8, *(len(t) + 1 for t in tasks))
    header = f"{metric + ' after':<16}" + "".join(f"{t:>{width}}" for t in tasks)
    lines = [header]
    for j, row in enumerate(matrix):
        label = "(untrained)" if j == 0 else tasks[j - 1]
        lines.append(f"{label:<16}" + "".join(f"{v * 100:>{width}.1f}" for v in row))
    summary = transfer(matrix)
    figures = [f"average {summary['average_accuracy'] * 100:.1f}"]
    for key in ("bwt", "fwt"):
        if summary[key] is not None:
            figures.append(f"{key.upper()} {summary[key] * 100:+.1f}")
    lines.append(", ".join(figures) + " (points; BWT < 0 is forgetting)")
    return "\n".join(lines)
