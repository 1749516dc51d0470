"""A warning when the dev split cannot tell the dev-best row from the runner-up on dev.

With K-shot dev splits (LM-BFF: 32 sentences per seed, 160 over five seeds) a dev lead of a point or two is
noise, and the dev split cannot be trusted to order the two rows: on MPQA setfit (MiniLM) led pet on dev
81.9 to 80.6 and was 7.7 points worse on test. The two rows' dev outputs (`dev_predictions.jsonl`, every
seed's) are paired example by example — each seed's dev split is shared by every row at that seed — and
compared as the test rows are (exact McNemar on right/wrong). The warning says the choice is not backed by
the dev split; it reads dev outputs only, never test, and does not change the choice.
"""

from __future__ import annotations

from tunelab.report.abtest import ALPHA, example_key, is_right
from tunelab.report.leaderboard import Row, row_label
from tunelab.stats import min_detectable_difference, paired_correctness_test

POWER = 0.8


def dev_correctness(row: Row) -> dict[str, list[bool]] | None:
    """example key → right/wrong on it, once per time it occurs over the row's seeds; None without dev outputs."""
    right: dict[str, list[bool]] = {}
    for cell in row.cells:
        rows = cell.dev_predictions()
        if not rows:
            return None
        for r in rows:
            right.setdefault(example_key(r), []).append(is_right(r["prediction"], r["label"]))
    return right


def paired(a: dict[str, list[bool]], b: dict[str, list[bool]]) -> tuple[list[bool], list[bool]] | None:
    """The two rows' right/wrong on the same dev examples (the same occurrences), or None when they scored others."""
    if a.keys() != b.keys() or any(len(a[k]) != len(b[k]) for k in a):
        return None
    keys = sorted(a)
    return [x for k in keys for x in a[k]], [x for k in keys for x in b[k]]


def dev_resolution_warning(best: Row, rows: list[Row], metric: str, fmt) -> str | None:
    """The warning text when best's dev lead over the runner-up on dev is not significant (p ≥ α)."""
    others = [r for r in rows if r is not best and r.dev]
    if not others or not best.dev:
        return None
    runner = max(others, key=lambda r: sum(r.dev) / len(r.dev))
    mine, theirs = dev_correctness(best), dev_correctness(runner)
    pairs = paired(mine, theirs) if mine and theirs else None
    if pairs is None:
        return None
    test = paired_correctness_test(*pairs)
    if test.p_value < ALPHA:
        return None
    n = len(pairs[0])
    discordant = (test.better_a + test.better_b) / n
    detectable = (f", and only differences of {min_detectable_difference(n, discordant, ALPHA, POWER) * 100:.1f} points "
                  f"or more would be detected (α = {ALPHA}, power {POWER})") if discordant else ", they agree on every one"
    return (f"the dev split does not separate {row_label(best)} (dev {fmt(metric, sum(best.dev) / len(best.dev))}) from "
            f"{row_label(runner)} (dev {fmt(metric, sum(runner.dev) / len(runner.dev))}): over the {n} dev examples of "
            f"their seeds {test.test} p = {test.p_value:.2g}{detectable}. The dev split alone cannot be trusted to order "
            f"these two; a larger one (more labelled examples held out) would.")
