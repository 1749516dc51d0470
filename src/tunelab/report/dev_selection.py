"""A warning when the dev-best row won on a dev score inflated by its own choice of checkpoint.

A strategy that evaluates every epoch and keeps the best one reports the dev score of that epoch: the
largest of several noisy scores on the same few examples, higher than the model's accuracy on new
sentences. A row that chose nothing on dev (one evaluation: setfit, zero-shot prompting) reports an
honest score. With 32 dev sentences the gap is several points — on MR, pet's best epochs averaged 83.1
and its last epochs 77.5 — enough to pick pet over setfit on mpnet-base (dev 80.6), which was 3.3
points better on test. The warning reads only the cells' per-epoch dev scores (`logs.csv`), never test.

Cells trained since then carry a held-out dev score instead (tunelab.held_out_dev) and are compared by it; the
warning remains for finished cells from before, which a resumed sweep keeps.
"""

from __future__ import annotations

from statistics import mean

from tunelab.report.curves import LOG_FILE, read_log
from tunelab.report.leaderboard import Row, is_fraction, row_label

MEANINGFUL_GAIN = 0.02
"""Best-epoch minus last-epoch dev score (a fraction) from which the warning is worth giving."""


def epoch_scores(cell, metric: str) -> list[float]:
    """The cell's dev metric after each evaluation, in order (empty without a readable per-epoch log)."""
    return [value for _, value in read_log(cell.directory / LOG_FILE).get(f"eval_{metric}", [])]


def selection_gain(row: Row, metric: str) -> tuple[float, float] | None:
    """(mean best-epoch dev score, mean last-epoch dev score) over the row's cells that chose among several
    evaluations and report that choice's own dev score, or None when none did. Cells run since the held-out dev
    score (tunelab.held_out_dev) report a score their checkpoint choice has not seen: they are not inflated."""
    inflated = [cell for cell in row.cells if not cell.costs.get("held_out_dev")]
    pairs = [(max(s), s[-1]) for s in (epoch_scores(cell, metric) for cell in inflated) if len(s) > 1]
    if not pairs:
        return None
    return mean(p[0] for p in pairs), mean(p[1] for p in pairs)


def selection_warning(best: Row, rows: list[Row], metric: str) -> str | None:
    """The warning text, when best's dev lead may come from its checkpoint choice (higher is better only)."""
    gain = selection_gain(best, metric)
    if gain is None or gain[0] - gain[1] < MEANINGFUL_GAIN:
        return None
    unselected = [r for r in rows if r is not best and r.dev and not r.search and selection_gain(r, metric) is None]
    rivals = [r for r in unselected if mean(r.dev) > gain[1]]
    if not rivals:
        return None
    fmt = (lambda v: f"{v * 100:.1f}") if is_fraction(metric) else (lambda v: f"{v:.3g}")
    named = ", ".join(f"{row_label(r)} ({fmt(mean(r.dev))})" for r in rivals)
    their, be = ("their", "are") if len(rivals) > 1 else ("its", "is")
    return (f"{row_label(best)}'s dev {metric} {fmt(mean(best.dev))} is that of its best epoch, chosen on the same dev "
            f"split (its last epochs: {fmt(gain[1])}); {named} chose nothing on dev, so {their} dev score{'s' * (be == 'are')} "
            f"{be} not inflated the same way: with a dev split this small, {'they' if be == 'are' else 'it'} may be the "
            f"better choice.")
