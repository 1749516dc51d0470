"""After the recommendation, how to use the picked strategy: the command that labels new text with it.

A sweep compares strategies over seeds; a user ships one model. The one named is the picked row's
cell with the best dev score (dev only, like the pick itself; the first seed on a tie). A cell that
kept its weights is used as it is (`tunelab predict`); one run with `sweep.save_artifacts: false`
kept none, and its own `config.yaml` trains it again with the same data, seed and settings.
"""

from __future__ import annotations

from tunelab.artifacts import NO_ARTIFACT_FILE
from tunelab.report.leaderboard import Row, higher_is_better


def deploy_cell(row: Row, metric: str):
    """The row's cell with the best dev score (row.dev is per seed, in the cells' order, when every cell has one)."""
    if len(row.dev) != len(row.cells) or not row.cells:
        return row.cells[0] if row.cells else None
    sign = 1 if higher_is_better(metric) else -1
    best = max(range(len(row.cells)), key=lambda i: (sign * row.dev[i], -i))
    return row.cells[best]


def reads_other_cells(method: str) -> bool:
    """An ensemble or a distill student: it needs other cells' saved weights, not only its own config."""
    from tunelab.errors import ConfigError
    from tunelab.methods import get_strategy

    try:
        return getattr(get_strategy(method).cls, "teacher_setting", None) is not None
    except ConfigError:  # a plugin's strategy that is not installed now: the report still builds
        return False


def next_step_line(row: Row, metric: str) -> str:
    cell = deploy_cell(row, metric)
    if cell is None:
        return ""
    directory = cell.directory
    which = f"seed {cell.meta.get('seed')}" + (", the best of its seeds on dev" if len(row.cells) > 1 else "")
    if not (directory / NO_ARTIFACT_FILE).is_file():
        return (f"To use it: `tunelab predict {directory} --data FILE` labels new text ({which}); "
                f"`tunelab evaluate {directory} --data FILE` scores a labelled file.")
    if reads_other_cells(cell.meta.get("method", "")):
        return (f"To use it: its cells kept no weights (sweep.save_artifacts: false) and it reads other entries' cells, "
                f"so the sweep runs again keeping them: `tunelab compare EXPERIMENT.yaml sweep.save_artifacts=true --out "
                f"NEW_DIR` (this sweep's experiment file), then `tunelab predict NEW_DIR/{directory.name} --data FILE` ({which}).")
    return (f"To use it: its cells kept no weights (sweep.save_artifacts: false); `tunelab run {directory / 'config.yaml'} "
            f"--out MODEL_DIR` runs it again with the same data, seed and settings ({which}) and keeps them (or its "
            f"prompt plan), then `tunelab predict MODEL_DIR --data FILE` labels new text.")
