"""xailab.stats: the intervals every verdict uses, on known numbers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from xailab.stats import (Interval, boot_estimate, paired_bootstrap, paired_t, standard_error, t_critical,
                          t_interval)


def test_t_critical_is_students_quantile_with_a_bonferroni_family():
    assert t_critical(3) == pytest.approx(4.302652729749464)          # 95 %, 2 degrees of freedom
    assert t_critical(8, level=0.90) == pytest.approx(1.894578605)    # 90 %, 7 df
    assert t_critical(3, family=3) == pytest.approx(sps.t.ppf(1 - 0.025 / 3, 2))
    assert t_critical(1) == math.inf                                  # one replicate: no spread to estimate
    with pytest.raises(ValueError, match="level"):
        t_critical(5, level=1.2)


def test_standard_error_per_axis_matches_scipy():
    assert standard_error([1.0, 2.0, 3.0, 4.0]) == pytest.approx(math.sqrt(5 / 3) / 2)
    assert isinstance(standard_error([1.0, 2.0]), float)
    rows = np.random.default_rng(0).normal(size=(6, 5))            # 6 replicates of 5 quantities
    assert standard_error(rows) == pytest.approx(sps.sem(rows, axis=0))
    assert standard_error(rows, axis=1) == pytest.approx(sps.sem(rows, axis=1))
    assert standard_error([0.7]) == math.inf                        # one replicate: unknown, not zero
    assert np.all(standard_error(rows[:1]) == math.inf) and standard_error(rows[:1]).shape == (5,)
    with pytest.raises(ValueError, match="scalar"):
        standard_error(3.0)


def test_t_interval_on_known_numbers():
    iv = t_interval([1.0, 2.0, 3.0, 4.0])
    # mean 2.5, sd sqrt(5/3), se sqrt(5/3)/2, t(0.975, 3) = 3.182446
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    assert iv.mean == pytest.approx(2.5) and iv.n == 4 and iv.level == 0.95
    assert (iv.low, iv.high) == pytest.approx((2.5 - half, 2.5 + half))
    assert iv.half_width == pytest.approx(half)
    one = t_interval([0.7])
    assert one.mean == 0.7 and one.low == -math.inf and one.high == math.inf
    with pytest.raises(ValueError, match="NaN"):
        t_interval([1.0, float("nan")])


def test_paired_t_pairs_by_replicate():
    a, b = np.array([0.91, 0.85, 0.88, 0.93]), np.array([0.80, 0.78, 0.79, 0.83])
    iv = paired_t(a, b)
    ref = sps.ttest_rel(a, b).confidence_interval(0.95)
    assert (iv.low, iv.high) == pytest.approx((ref.low, ref.high))
    with pytest.raises(ValueError, match="pair"):
        paired_t([1.0, 2.0], [1.0])


def test_paired_bootstrap_interval():
    g = torch.Generator().manual_seed(0)
    before = torch.rand(40, generator=g)
    # a constant shift: every resample has the same mean difference
    iv = paired_bootstrap(before + 0.05, before)
    assert iv.mean == pytest.approx(0.05) and iv.low == pytest.approx(0.05) and iv.high == pytest.approx(0.05)
    assert iv.excludes(0.0) and iv.n == 40 and iv.level == 0.95
    # pairing removes what both share: a large common image effect does not widen the interval
    noise = 0.01 * torch.randn(40, generator=g, dtype=torch.float64)
    common = 10 * torch.rand(40, generator=g, dtype=torch.float64)
    paired = paired_bootstrap(common + 0.02 + noise, common)
    assert paired.low < 0.02 + noise.mean() < paired.high and paired.high - paired.low < 0.02
    # seeded, and the list / array / tensor forms agree
    assert paired_bootstrap([1.0, 2.0, 4.0], [0.0, 0.0, 0.0], seed=3) == \
        paired_bootstrap(torch.tensor([1.0, 2, 4]), torch.zeros(3), seed=3)
    # a difference with no mean shift: the interval contains 0
    assert not paired_bootstrap(common + noise - noise.mean(), common).excludes(0.0)


def test_interval_reaches_a_claimed_gain_only_when_resolved_and_compatible():
    up, small, flat, down = (Interval(m, lo, hi, 0.95, 10) for m, lo, hi in
                             [(0.05, 0.02, 0.08), (0.01, 0.005, 0.02), (0.0, -0.01, 0.06), (-0.02, -0.03, -0.01)])
    assert up.reaches(0.042) and not small.reaches(0.042)      # resolved but wholly below the claimed size
    assert not flat.reaches(0.042)                               # reaches the size, but no gain is resolved
    assert [iv.direction for iv in (up, flat, down)] == ["a resolved gain", "no resolved change", "a resolved loss"]


def test_paired_bootstrap_covers_the_true_mean_at_its_level():
    g = torch.Generator().manual_seed(1)
    hits = 0
    for k in range(200):
        d = 0.3 + torch.randn(50, generator=g, dtype=torch.float64)
        hits += not paired_bootstrap(d, torch.zeros(50), n_boot=1000, level=0.9, seed=k).excludes(0.3)
    assert 0.82 <= hits / 200 <= 0.96      # 90 % nominal; the percentile bootstrap runs a little short


def test_paired_bootstrap_refuses_bad_input():
    with pytest.raises(ValueError, match="pair"):
        paired_bootstrap([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least 2"):
        paired_bootstrap([1.0], [0.0])
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap([1.0, 2.0], [0.0, 0.0], level=1.0)
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap([1.0, float("nan")], [0.0, 0.0])


def test_boot_estimate_reads_a_mean_of_exactly_zero_as_zero():
    # 0.1 + 0.2 − 0.3 + 0 is 5.6e-17 in floating point: a bootstrap bound there would read "CI95 > 0"
    v = np.array([0.1, 0.2, -0.3, 0.0])
    assert v.mean() != 0
    est = boot_estimate(v, np.array([[0, 1, 2, 3], [1, 1, 1, 1], [0, 0, 0, 0]]))
    assert est.mean == 0.0
    assert est.boot.tolist() == [0.0, pytest.approx(0.2), pytest.approx(0.1)]
    assert boot_estimate(np.full(4, 1e-20), np.zeros((1, 4), dtype=int)).mean == 1e-20  # small is not zero
