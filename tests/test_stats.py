"""Paired significance tests against hand-computed binomial values and known differences."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tunelab.errors import DataError
from tunelab.stats import mcnemar_exact, mean_std, paired_bootstrap, paired_correctness_test


def _pairs(both: int, only_a: int, only_b: int, neither: int) -> tuple[list[bool], list[bool]]:
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return a, b


def test_mcnemar_matches_hand_binomial():
    # b=8, c=1, n=9: p = 2 · (C(9,0) + C(9,1)) / 2⁹ = 2 · 10/512 = 0.0390625.
    a, b = _pairs(both=20, only_a=8, only_b=1, neither=5)
    result = mcnemar_exact(a, b)
    assert (result.b, result.c) == (8, 1)
    assert result.p_value == pytest.approx(0.0390625, abs=1e-12)
    assert result.p_value == pytest.approx(2 * sum(math.comb(9, k) for k in range(2)) / 2**9)


def test_paired_correctness_test_is_exact_mcnemar_with_one_seed_per_side():
    a, b = _pairs(both=20, only_a=8, only_b=1, neither=5)
    result = paired_correctness_test(np.array(a, float), np.array(b, float))
    assert (result.better_a, result.better_b, result.test) == (8, 1, "exact McNemar")
    assert result.p_value == pytest.approx(mcnemar_exact(a, b).p_value) and result.mean_diff == pytest.approx(7 / 34)


def test_seed_averaged_correctness_is_tested_by_how_much_not_only_which_side_is_higher():
    # B (one seed) is right on 300 examples A gets right in 4 of its 5 seeds, and wrong on 300 A always gets
    # right; both are right on 400 more. A is better by 24 points, yet higher on as many examples as B: the sign
    # test over "which side is higher" calls them equal (p = 1), the paired t-test on the shares does not.
    a = np.array([0.8] * 300 + [1.0] * 300 + [1.0] * 400)
    b = np.array([1.0] * 300 + [0.0] * 300 + [1.0] * 400)
    result = paired_correctness_test(a, b)
    assert (result.better_a, result.better_b, result.test) == (300, 300, "paired t-test")
    assert mcnemar_exact((a > b).tolist(), (b > a).tolist()).p_value == 1.0
    assert result.mean_diff == pytest.approx(0.24) and result.p_value < 1e-10


def test_paired_t_test_leaves_a_small_mixed_difference_undecided():
    # Shares that differ a little both ways on 6 of 40 examples: no evidence either way.
    a = np.array([0.6, 0.4, 1.0, 0.2, 0.8, 0.6] + [1.0] * 34)
    b = np.array([0.4, 0.6, 0.8, 0.4, 0.6, 0.8] + [1.0] * 34)
    result = paired_correctness_test(a, b)
    assert result.test == "paired t-test" and result.p_value > 0.5
    assert paired_correctness_test(a, a).p_value == 1.0


def test_mcnemar_is_symmetric():
    a, b = _pairs(both=3, only_a=1, only_b=8, neither=2)
    assert mcnemar_exact(a, b).p_value == pytest.approx(0.0390625)


def test_mcnemar_no_discordant_pairs_gives_p_one():
    a, b = _pairs(both=10, only_a=0, only_b=0, neither=4)
    assert mcnemar_exact(a, b).p_value == 1.0


def test_mcnemar_balanced_discordance_is_capped_at_one():
    a, b = _pairs(both=0, only_a=3, only_b=3, neither=0)
    assert mcnemar_exact(a, b).p_value == 1.0


def test_mcnemar_input_errors():
    with pytest.raises(DataError):
        mcnemar_exact([], [])
    with pytest.raises(ValueError, match="equal lengths"):
        mcnemar_exact([True], [True, False])


def test_bootstrap_constant_shift_has_zero_width():
    rng = np.random.default_rng(1)
    b = rng.normal(size=50)
    result = paired_bootstrap(b + 0.3, b, n_resamples=500)
    assert result.diff == pytest.approx(0.3)
    assert result.low == pytest.approx(0.3) and result.high == pytest.approx(0.3)


def test_bootstrap_ci_contains_true_difference():
    # Population accuracies 0.8 and 0.6: the true difference is 0.2.
    rng = np.random.default_rng(123)
    a = rng.random(600) < 0.8
    b = rng.random(600) < 0.6
    result = paired_bootstrap(a, b, n_resamples=2000, seed=0)
    assert result.low < 0.2 < result.high
    assert result.low < result.diff < result.high
    assert result.diff == pytest.approx(a.mean() - b.mean())
    assert result.high - result.low < 0.15  # n=600 gives a half-width near 0.05


def test_bootstrap_is_deterministic_per_seed():
    rng = np.random.default_rng(7)
    a, b = rng.random(80), rng.random(80)
    assert paired_bootstrap(a, b, seed=3) == paired_bootstrap(a, b, seed=3)
    assert paired_bootstrap(a, b, seed=3) != paired_bootstrap(a, b, seed=4)


def test_bootstrap_custom_metric_matches_fast_path():
    # The vectorised mean and a user-supplied mean see the same resampled indices.
    rng = np.random.default_rng(5)
    a, b = (rng.random(40) < 0.7).tolist(), (rng.random(40) < 0.5).tolist()
    fast = paired_bootstrap(a, b, n_resamples=300, seed=9)
    slow = paired_bootstrap(a, b, metric_fn=lambda v: float(np.mean(v)), n_resamples=300, seed=9)
    assert fast.diff == pytest.approx(slow.diff)
    assert fast.low == pytest.approx(slow.low) and fast.high == pytest.approx(slow.high)


def test_bootstrap_wider_confidence_gives_wider_interval():
    rng = np.random.default_rng(11)
    a, b = rng.random(100), rng.random(100)
    narrow = paired_bootstrap(a, b, confidence=0.5)
    wide = paired_bootstrap(a, b, confidence=0.99)
    assert wide.low < narrow.low and narrow.high < wide.high


def test_bootstrap_input_errors():
    with pytest.raises(DataError):
        paired_bootstrap([], [])
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0], confidence=1.0)


def test_mean_std_sample_std():
    # mean 2.5; s² = (2.25 + 0.25 + 0.25 + 2.25)/3 = 5/3.
    mean, std = mean_std([1, 2, 3, 4])
    assert mean == 2.5 and std == pytest.approx(math.sqrt(5 / 3))
    assert mean_std([0.7]) == (0.7, 0.0)
    with pytest.raises(DataError):
        mean_std([])
