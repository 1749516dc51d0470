"""The recommendation: which strategy to pick, what it costs, and how sure the test split lets us be.

Per K (rows with different K are not like for like):

- **best**: the row with the best mean *dev* metric over seeds (never test; ties on dev, common with
  16 dev examples, go to the cheapest of them).
- **pick**: the cheapest row statistically tied with best on test: each other row is compared with best
  over the same test examples, each side's correctness averaged over its own seeds (the example is the
  unit, as in the prompt A/B tests): exact McNemar test when each side has one seed, else a paired t-test on
  the per-example differences of the seed-averaged correctness; tied when p ≥ 0.05; and a paired
  bootstrap interval of the difference of the seed-averaged main metric. Text-overlap metrics (ROUGE,
  BLEU) have no right/wrong per example: tied when that interval holds 0.
- **cheapest**: the smallest model (its total parameters, what serving costs), then the fewest
  trainable parameters (what each task stores), then the shortest training time, then the fastest
  evaluation (prompting rows train nothing; few-shot pays for its demonstrations at every prediction).
- **resolution**: the smallest accuracy difference a McNemar test on n test examples detects at
  α = 0.05 with power 0.8 (`stats.min_detectable_difference`, Connor 1987), for best against pick (or
  against the runner-up on test when pick is best). When that pair is tied and the difference is over
  5 points, the report warns that "tied" means "too few test examples to tell", not "equal".
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from tunelab.report.dev_resolution import dev_resolution_warning
from tunelab.report.dev_selection import selection_warning
from tunelab.report.abtest import ALPHA, ABResult, example_key, is_right, paired_test, reference, registered, seed_mean
from tunelab.report.baseline import constant_answer_warning
from tunelab.report.next_step import next_step_line
from tunelab.report.leaderboard import Row, fmt_number, fmt_params, higher_is_better, is_fraction, row_label
from tunelab.report.results import PREDICTIONS_FILE
from tunelab.stats import min_detectable_difference, paired_bootstrap

POWER = 0.8
OTHER_RESAMPLES = 200
"""Bootstrap resamples for a main metric other than accuracy (accuracy's are vectorised: 2,000)."""
MEANINGFUL = 0.05
"""An accuracy difference (5 points) worth separating; a larger detectable difference draws the warning."""


@dataclass
class Examples:
    """A row's stored test predictions: per seed, in the same example order."""
    keys: list[str]
    refs: list[str]
    preds: list[list[str]]
    rows: list[list[dict]]
    """The raw prediction rows per seed (scores, text) for the error analysis."""

    def right(self) -> np.ndarray:
        """(n,) the share of seeds that got each example right."""
        return np.mean([[is_right(p, r) for p, r in zip(seed, self.refs)] for seed in self.preds], axis=0)


def row_examples(row: Row) -> Examples | None:
    """None when a cell has no readable predictions (older or failed runs) or seeds scored different examples."""
    per_seed = []
    for cell in row.cells:
        if not (cell.directory / PREDICTIONS_FILE).is_file():
            return None
        try:
            per_seed.append(cell.predictions())
        except (OSError, ValueError):
            return None
    if not per_seed or not per_seed[0]:
        return None
    keys = [example_key(r) for r in per_seed[0]]
    if any([example_key(r) for r in rows] != keys for rows in per_seed[1:]):
        return None
    return Examples(keys, [reference(r) for r in per_seed[0]],
                    [[str(r.get("prediction")) for r in rows] for rows in per_seed], per_seed)


def row_interval(examples: Examples, metric: str, n_resamples: int = 2000) -> tuple[float, float] | None:
    """95% percentile bootstrap over test examples of the seed-averaged metric: how much the score would move
    on another test set of this size. paired_bootstrap against a constant zero system is the one-sample case."""
    n = len(examples.refs)
    if metric == "accuracy":
        boot = paired_bootstrap(examples.right(), np.zeros(n), n_resamples=n_resamples)
    elif registered(metric):
        def fn(index: np.ndarray) -> float:  # index −1: the zero system
            if index[0] < 0:
                return 0.0
            return seed_mean(metric, [[seed[i] for i in index] for seed in examples.preds], [examples.refs[i] for i in index])
        boot = paired_bootstrap(np.arange(n), np.full(n, -1), metric_fn=fn, n_resamples=n_resamples)
    else:
        return None  # a flattened key such as f1_<label>: no metric function to resample
    return boot.low, boot.high


@dataclass
class Recommendation:
    k_shot: int | None
    metric: str
    best: Row | None
    pick: Row | None = None
    tied: list[Row] = field(default_factory=list)
    tests: dict[str, ABResult] = field(default_factory=dict)
    """row group → best (A) against that row (B) on test."""
    dev_ties: list[Row] = field(default_factory=list)
    rival: Row | None = None
    """The row the resolution is computed against: pick, or the runner-up on test when pick is best."""
    n: int = 0
    mde: float | None = None
    discordant: float | None = None
    warning: str = ""
    note: str = ""
    warnings: list[str] = field(default_factory=list)
    """Other warnings about best or pick (e.g. a one-class predictor, from report/errors.py)."""


def total_params(row: Row) -> float:
    values = [c.costs.get("total_params") for c in row.cells]
    values = [v for v in values if isinstance(v, (int, float))]
    return min(values) if values else math.inf


def cost_key(row: Row, model_size: dict[str, float]) -> tuple:
    """Cheaper first: model size, then trainable parameters, then training time, then evaluation speed
    (missing = most expensive). The last separates prompting rows, which train nothing: a few-shot prompt's
    demonstrations are paid for at every prediction."""
    def number(value):
        return value if isinstance(value, (int, float)) and not math.isnan(value) else math.inf
    speed = row.costs.get("eval_examples_per_second")
    return (model_size.get(row.model, math.inf), number(row.costs.get("trainable_params")),
            number(row.costs.get("train_seconds")), -speed if number(speed) != math.inf else math.inf)


def recommend(rows: list[Row], metric: str, examples: dict[str, Examples | None],
              n_resamples: int = 2000) -> list[Recommendation]:
    """One recommendation per K; sets each row's 95% interval, its verdict and the pick's mark."""
    if metric != "accuracy":
        # Other metrics are recomputed per resample and seed (sklearn, rouge: milliseconds each, not one
        # vectorised mean): fewer resamples keep a report of many rows within seconds to a minute.
        n_resamples = min(n_resamples, OTHER_RESAMPLES)
    # A model's size: the smallest total among its rows (a head or an adapter adds a little on top).
    model_size: dict[str, float] = defaultdict(lambda: math.inf)
    for row in rows:
        model_size[row.model] = min(model_size[row.model], total_params(row))
        if examples.get(row.group) is not None:
            row.interval = row_interval(examples[row.group], metric, n_resamples)
    by_k: dict = defaultdict(list)
    for row in rows:
        if row.mean(metric) is not None:
            by_k[row.k_shot].append(row)
    return [recommend_at_k(k, same_k, metric, examples, model_size, n_resamples) for k, same_k in by_k.items()]


def recommend_at_k(k, rows: list[Row], metric: str, examples, model_size, n_resamples: int) -> Recommendation:
    sign = 1 if higher_is_better(metric) else -1
    scored = [r for r in rows if r.dev]
    if not scored:
        return Recommendation(k, metric, None, note="no row has a dev metric (no dev split), and choosing on test "
                                                    "would flatter the choice: the leaderboard only ranks by test")
    dev = {r.group: sign * sum(r.dev) / len(r.dev) for r in scored}
    top = max(dev.values())
    dev_ties = [r for r in scored if math.isclose(dev[r.group], top, abs_tol=1e-12)]
    best = min(dev_ties, key=lambda r: cost_key(r, model_size))
    rec = Recommendation(k, metric, best, pick=best, dev_ties=dev_ties if len(dev_ties) > 1 else [])
    best.verdict = "best on dev"
    inflated = selection_warning(best, scored, metric) if sign > 0 else None
    if inflated:
        rec.warnings.append(inflated)
    unresolved = dev_resolution_warning(best, scored, metric, fmt) if sign > 0 and by_correctness(metric) else None
    if unresolved:
        rec.warnings.append(unresolved)
    base = examples.get(best.group)
    if base is None:
        rec.note = "the dev-best row has no stored test predictions: no row could be tested against it"
        return rec
    for row in rows:
        if row is best:
            continue
        other = examples.get(row.group)
        if other is None or other.keys != base.keys:
            row.verdict = "not tested (other examples)" if other else "not tested (no readable predictions)"
            continue
        test = paired_test(row_label(best), k, {}, row_label(best), row_label(row), best.seeds,
                           base.preds, other.preds, base.refs, metric, n_resamples)
        rec.tests[row.group] = test
        tied, evidence = judge(test, metric)
        if tied:
            rec.tied.append(row)
            row.verdict = f"tied ({evidence})"
        else:
            worse = test.only_a > test.only_b if by_correctness(metric) else sign * test.diff > 0
            row.verdict = f"{'worse' if worse else 'better'} on test ({evidence})"
    rec.pick = min([best] + rec.tied, key=lambda r: cost_key(r, model_size))
    if rec.pick is not best:
        rec.pick.verdict = f"cheapest tied ({judge(rec.tests[rec.pick.group], metric)[1]})"
        rec.pick.best.add("verdict")
    best.best.add("verdict")
    resolution(rec, base, examples, rows, metric)
    unlearnt = constant_answer_warning(rec.pick, examples.get(rec.pick.group), metric)
    if unlearnt:
        rec.warnings.append(unlearnt)
    return rec


def by_correctness(metric: str) -> bool:
    """Whether ties are judged on right/wrong per example (McNemar or paired t-test). Text-overlap metrics
    (ROUGE, BLEU) are not: nearly every generated text is "wrong" by exact match, which would tie everything."""
    return metric in ("accuracy", "exact_match", "squad_em", "f1", "mcc") or metric.startswith("f1_") or not registered(metric)


def judge(test: ABResult, metric: str) -> tuple[bool, str]:
    """(tied?, the evidence in words): p ≥ α of the paired correctness test, or for text-overlap metrics the
    bootstrap interval of the difference holding 0."""
    if by_correctness(metric):
        return test.p_value >= ALPHA, f"p = {test.p_value:.2g}"
    return test.low <= 0.0 <= test.high, f"difference in [{fmt(metric, test.low)}, {fmt(metric, test.high)}]"


def resolution(rec: Recommendation, base: Examples, examples, rows: list[Row], metric: str) -> None:
    """The smallest detectable difference for best against pick, or (pick is best) against the closest
    tested row on test: the tied one with the best test mean, else the runner-up."""
    sign = 1 if higher_is_better(metric) else -1
    rec.n = len(base.refs)
    rival = rec.pick if rec.pick is not rec.best else None
    if rival is None:
        pool = rec.tied or [row for row in rows if row.group in rec.tests]
        rival = max(pool, key=lambda r: sign * r.mean(metric), default=None)
    if rival is None:
        return
    rec.rival = rival
    if not by_correctness(metric):
        return  # the detectable difference below is for right/wrong scores
    rec.discordant = float(np.mean(np.abs(base.right() - examples[rival.group].right())))
    rec.mde = min_detectable_difference(rec.n, rec.discordant, ALPHA, POWER)
    if rec.tests[rival.group].p_value >= ALPHA and rec.mde > MEANINGFUL:
        rec.warning = (f"{rec.n} test examples are too few to separate {row_label(rec.best)} and {row_label(rival)}: "
                       f"only {metric} differences of {rec.mde * 100:.1f} points or more would be detected "
                       f"(α = {ALPHA}, power {POWER}); \"tied\" here means \"not told apart\", not \"equal\".")


# ---------------------------------------------------------------------------------------------
# Text: the same lines head the HTML/Markdown report and the terminal summary


def fmt(metric: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * 100:.1f}" if is_fraction(metric) else f"{value:.3g}"


def describe(row: Row, metric: str) -> str:
    dev = fmt(metric, sum(row.dev) / len(row.dev)) if row.dev else "–"
    interval = f" [95% {fmt(metric, row.interval[0])}, {fmt(metric, row.interval[1])}]" if row.interval else ""
    seeds = f"{len(row.seeds)} seed{'s' * (len(row.seeds) > 1)}"
    return (f"{row_label(row)} ({row.model}, {row.family or '–'}): dev {dev}, test {fmt(metric, row.mean(metric))}"
            f"{interval} over {seeds}. Cost: {fmt_params(row.costs.get('trainable_params'), None)} trainable "
            f"parameters, {fmt_number(row.costs.get('train_seconds'))} s training per cell, "
            f"{fmt_number(row.costs.get('eval_examples_per_second'))} examples/s evaluation, "
            f"{fmt_number(row.costs.get('peak_memory_mb'))} MB peak memory.")


def flag_unfinished(recommendations: list[Recommendation], rows: list[Row], unfinished: list[dict]) -> None:
    """A sweep still running, interrupted, or with failed cells: its pick is among the cells finished so far,
    and the recommendation says which rows are missing or rest on fewer seeds than planned."""
    for rec in recommendations:
        here = [cell for cell in unfinished if cell.get("k_shot") == rec.k_shot]
        if rec.best is None or not here:
            continue
        groups = {cell["group"] for cell in here}
        finished = {row.group for row in rows if row.k_shot == rec.k_shot}
        parts = [f"{what}: {short_list(sorted(found))}" for what, found in (
            ("no finished cell yet", groups - finished), ("fewer seeds than planned", groups & finished)) if found]
        rec.warnings.insert(0, f"the sweep is not complete: {len(here)} cell(s) at this K have not finished "
                            f"({'; '.join(parts)}), so the pick is among the cells finished so far; "
                            f"`tunelab compare` on the same file runs the rest and retries failed ones.")


def short_list(names: list[str], most: int = 6) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def recommendation_lines(rec: Recommendation) -> list[str]:
    k = "" if rec.k_shot is None else f"K={rec.k_shot}: "
    if rec.best is None:
        return [f"{k}no recommendation: {rec.note}."]
    m = rec.metric
    lines = [f"{k}Pick {row_label(rec.pick)} ({rec.pick.model})"
             + (" — best on dev, and no cheaper strategy is statistically tied with it on test."
                if rec.pick is rec.best else f" — the cheapest strategy statistically tied on test with "
                                             f"the best on dev, {row_label(rec.best)}."),
             f"Best on dev ({m}): {describe(rec.best, m)}"]
    if rec.dev_ties:
        lines.append(f"{len(rec.dev_ties)} rows share the best dev score ({', '.join(row_label(r) for r in rec.dev_ties)}): "
                     f"the cheapest of them is named; the dev split is too small to rank them.")
    if rec.pick is not rec.best:
        t = rec.tests[rec.pick.group]
        lines.append(f"Cheapest tied: {describe(rec.pick, m)} {row_label(rec.best)} − {row_label(rec.pick)} on test: "
                     f"{fmt(t.metric, t.diff)} [95% {fmt(t.metric, t.low)}, {fmt(t.metric, t.high)}] (paired bootstrap over "
                     f"{t.n} test examples, seeds averaged); "
                     + (f"{t.test} p = {t.p_value:.2g} (tied: p ≥ {ALPHA})." if by_correctness(m) else
                        f"tied: the interval holds 0 ({m} is no right/wrong score, so no test of correctness)."))
    if rec.note:
        lines.append(rec.note[0].upper() + rec.note[1:] + ".")
    lines += [f"Warning: {w}" for w in rec.warnings]
    if rec.warning:
        lines.append("Warning: " + rec.warning)
    elif rec.mde is not None:
        lines.append(f"With {rec.n} test examples, {m} differences of {rec.mde * 100:.1f} points or more between "
                     f"{row_label(rec.best)} and {row_label(rec.rival)} are detected (α = {ALPHA}, power {POWER}).")
    step = next_step_line(rec.pick, m)
    return lines + ([step] if step else [])


def recommendation_blocks(recs: list[Recommendation]) -> list:
    from tunelab.report.document import Text

    if not recs:
        return [Text("No cell has finished yet.")]
    blocks = [Text(line, "pick" if i == 0 else "warning" if line.startswith("Warning:") else "")
              for rec in recs for i, line in enumerate(recommendation_lines(rec))]
    blocks.append(Text(
        "How this is chosen: the best strategy by mean dev metric over seeds (never test); every other strategy at "
        "its K is compared with it over the same test examples (each example's correctness averaged over seeds; "
        "exact McNemar test with one seed per side, else a paired t-test on the per-example differences; tied "
        "when p ≥ 0.05; paired bootstrap interval of the difference; for text-overlap "
        "metrics such as ROUGE or BLEU, tied when that interval holds 0); the pick is the "
        "cheapest of the tied: smallest model, then fewest trainable parameters, then shortest training, then fastest "
        "evaluation. The "
        "smallest detectable difference solves Connor's (1987) sample size for paired proportions, "
        "n = [z₀.₉₇₅·√ψ + z₀.₈·√(ψ − δ²)]² / δ², for δ at the test split's n, with ψ the two strategies' "
        "share of disagreeing examples."))
    return blocks
