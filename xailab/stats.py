"""The statistics every verdict is computed with: paired differences, Student-t intervals over
replicates (with a correction over a family of comparisons), and the paired bootstrap over images.

All of them return an :class:`Interval` (the estimate, its interval, the level and the number of
paired replicates), so a notebook never writes its own standard error or quantile.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
from scipy.stats import t as student_t

from xailab.utils import check_finite, check_positive, seeded_generator

__all__ = ["Interval", "paired_bootstrap", "paired_t", "standard_error", "t_critical", "t_interval"]


class Interval(NamedTuple):
    """A mean (of a difference, a slope ...) and its confidence interval ``[low, high]`` at ``level``."""
    mean: float
    low: float
    high: float
    level: float
    n: int                          # replicates (seeds, pairs, images) the interval is drawn from

    def excludes(self, value: float = 0.0) -> bool:
        """Whether ``value`` lies outside the interval (the difference is resolved)."""
        return not self.low <= value <= self.high

    def reaches(self, gain: float) -> bool:
        """A resolved gain (the interval above 0) compatible with ``gain`` (its upper end reaches it)."""
        return self.low > 0 and self.high >= gain

    @property
    def direction(self) -> str:
        """``"a resolved gain"``, ``"a resolved loss"`` or ``"no resolved change"``."""
        return "a resolved gain" if self.low > 0 else "a resolved loss" if self.high < 0 else "no resolved change"

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def __str__(self) -> str:
        return f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def _values(values, what: str) -> np.ndarray:
    v = np.asarray(torch.as_tensor(values, dtype=torch.float64).flatten().numpy(), dtype=np.float64)
    if not np.isfinite(v).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return v


def standard_error(values, axis: int = 0):
    """The standard error of the mean of ``values`` along ``axis`` (one replicate per entry):
    ``std(ddof=1) / √n``, infinite where fewer than two replicates make it unknown. A float for a 1-D
    input, an array of the remaining axes otherwise."""
    v = np.asarray(values, dtype=float)
    if v.ndim == 0:
        raise ValueError("values must hold one entry per replicate, got a scalar")
    n = v.shape[axis]
    if n < 2:
        se = np.full(np.delete(v.shape, axis), math.inf)
    else:
        se = v.std(axis=axis, ddof=1) / math.sqrt(n)
    return float(se) if np.ndim(se) == 0 else se


def t_critical(n: int, level: float = 0.95, family: int = 1) -> float:
    """The Student-t quantile of a two-sided ``level`` interval from ``n`` replicates (df = n − 1),
    Bonferroni-corrected over ``family`` comparisons (each taken at ``1 − (1 − level)/family``)."""
    n = int(check_positive("n", n, integer=True))
    family = int(check_positive("family", family, integer=True))
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}")
    if n < 2:
        return math.inf
    return float(student_t.ppf(1 - (1 - level) / 2 / family, n - 1))


def t_interval(values: Sequence[float], *, level: float = 0.95, family: int = 1) -> Interval:
    """Mean of ``values`` (one per replicate) with its Student-t interval (Bonferroni over ``family``)."""
    v = _values(values, "values")
    if v.size == 0:
        raise ValueError("values must hold at least one replicate")
    mean = float(v.mean())
    se = standard_error(v)
    half = t_critical(v.size, level, family) * se if v.size > 1 else math.inf
    return Interval(mean, mean - half, mean + half, float(level), int(v.size))


def paired_t(a: Sequence[float], b: Sequence[float], *, level: float = 0.95, family: int = 1) -> Interval:
    """``a − b`` paired by replicate (the same seed, split or pair in both) with its t-interval."""
    a, b = _values(a, "a"), _values(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must pair up one value per replicate, got {a.size} and {b.size}")
    return t_interval(a - b, level=level, family=family)


def paired_bootstrap(after, before, *, n_boot: int = 4000, level: float = 0.95, seed: int = 0) -> Interval:
    """Mean of ``after − before`` over paired samples (one value per image, the same images in the
    same order) with a percentile bootstrap interval: images are resampled with replacement
    ``n_boot`` times (seeded; no global RNG), the mean difference recomputed for each resample and
    the ``(1 − level)/2`` and ``(1 + level)/2`` quantiles taken.

    Resampling *pairs* keeps what the two share (an image hard for both) out of the interval, so
    it is much narrower than one built from two separate means. Accepts tensors, arrays or lists
    of equal length ``N >= 2``, finite.
    """
    a = torch.as_tensor(after, dtype=torch.float64).flatten()
    b = torch.as_tensor(before, dtype=torch.float64).flatten()
    if a.shape != b.shape:
        raise ValueError(f"after and before must pair up one value per sample, got {a.numel()} and {b.numel()}")
    if a.numel() < 2:
        raise ValueError(f"a bootstrap needs at least 2 paired samples, got {a.numel()}")
    check_finite("after", a)
    check_finite("before", b)
    level = float(level)
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level!r}")
    n_boot = int(check_positive("n_boot", n_boot, integer=True))
    d = a - b
    g = seeded_generator(seed)
    idx = torch.randint(d.numel(), (n_boot, d.numel()), generator=g)
    means = d[idx].mean(1)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    low, high = torch.quantile(means, q).tolist()
    return Interval(float(d.mean()), float(low), float(high), level, int(d.numel()))


# --------------------------------------------------------------------------------------------------------
# Estimates with their sampling distribution: what a registered verdict is decided on (xailab.claims)
# --------------------------------------------------------------------------------------------------------
class Estimate:
    """A measured contrast ``D`` and its sampling distribution: intervals at any level and one-sided
    p-values, so that every verdict form (and Holm's correction over a family) reads the same object."""

    mean: float
    n: int

    def interval(self, level: float = 0.95) -> Interval:
        """The two-sided ``level`` interval of ``D``."""
        raise NotImplementedError

    def p_below(self, c: float) -> float:
        """One-sided p-value of ``H0: D >= c`` against ``D < c`` (small when the estimate is resolved below ``c``)."""
        raise NotImplementedError

    def p_above(self, c: float) -> float:
        """One-sided p-value of ``H0: D <= c`` against ``D > c``."""
        raise NotImplementedError


class TEstimate(Estimate):
    """A mean over independent replicates with Student's t: ``mean``, its standard error ``se`` and ``df``."""

    def __init__(self, mean: float, se: float, df: int, n: int):
        self.mean, self.se, self.df, self.n = float(mean), float(se), int(df), int(n)

    def interval(self, level: float = 0.95) -> Interval:
        if self.df < 1 or not math.isfinite(self.se):
            return Interval(self.mean, -math.inf, math.inf, level, self.n)
        half = float(student_t.ppf(1 - (1 - level) / 2, self.df)) * self.se
        return Interval(self.mean, self.mean - half, self.mean + half, level, self.n)

    def _t(self, c: float) -> float:
        if self.se == 0:
            return math.copysign(math.inf, self.mean - c) if self.mean != c else 0.0
        return (self.mean - c) / self.se

    def p_below(self, c: float) -> float:
        return 1.0 if self.df < 1 else float(student_t.cdf(self._t(c), self.df))

    def p_above(self, c: float) -> float:
        return 1.0 if self.df < 1 else float(student_t.sf(self._t(c), self.df))

    @classmethod
    def of(cls, values) -> "TEstimate":
        """The mean of per-replicate values (df = n − 1)."""
        v = _values(values, "values")
        if v.size == 0:
            raise ValueError("values must hold at least one replicate")
        se = standard_error(v)
        return cls(float(v.mean()), se, v.size - 1, v.size)

    @classmethod
    def slope(cls, x, y) -> "TEstimate":
        """The OLS slope of ``y`` on ``x`` over independent replicates, one point each (df = n − 2)."""
        x, y = _values(x, "x"), _values(y, "y")
        if x.shape != y.shape or x.size < 3:
            raise ValueError(f"a slope needs the same number (>= 3) of x and y values, got {x.size} and {y.size}")
        xc = x - x.mean()
        sxx = float((xc ** 2).sum())
        if sxx == 0:
            raise ValueError("x must take at least two distinct values for a slope")
        b = float((xc * (y - y.mean())).sum() / sxx)
        resid = y - y.mean() - b * xc
        se = math.sqrt(float((resid ** 2).sum()) / (x.size - 2) / sxx)
        return cls(b, se, x.size - 2, x.size)


class BootEstimate(Estimate):
    """A mean over images with its paired bootstrap distribution ``boot`` (one mean per resample)."""

    def __init__(self, mean: float, boot: np.ndarray, n: int):
        self.mean, self.boot, self.n = float(mean), np.asarray(boot, dtype=np.float64), int(n)

    def interval(self, level: float = 0.95) -> Interval:
        low, high = np.quantile(self.boot, [(1 - level) / 2, (1 + level) / 2])
        return Interval(self.mean, float(low), float(high), level, self.n)

    def p_below(self, c: float) -> float:
        return float(np.mean(self.boot >= c))

    def p_above(self, c: float) -> float:
        return float(np.mean(self.boot <= c))


def bootstrap_indices(n: int, n_boot: int = 10_000, seed: int = 0, strata=None) -> np.ndarray:
    """``(n_boot, n)`` resampled image indices (seeded): share them across the components of one claim.

    ``strata`` (one label per image, e.g. the network an image was explained on): each resample draws, within every
    stratum, as many of its images as it holds, so every resample keeps each stratum's weight in the mean."""
    rng = np.random.default_rng(int(seed))
    if strata is None:
        return rng.integers(0, int(n), size=(int(n_boot), int(n)))
    labels = np.asarray(strata)
    if labels.shape != (int(n),):
        raise ValueError(f"strata must give one label per image ({n}), got shape {labels.shape}")
    out = np.empty((int(n_boot), int(n)), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        out[:, members] = members[rng.integers(0, members.size, size=(int(n_boot), members.size))]
    return out


def boot_estimate(values, indices: np.ndarray) -> BootEstimate:
    """The mean of per-image ``values`` with the bootstrap distribution over the resamples ``indices``."""
    v = _values(values, "values")
    if indices.shape[1] != v.size:
        raise ValueError(f"indices resample {indices.shape[1]} images, values hold {v.size}")
    # A mean that is 0 in exact arithmetic (per-image values 1/7, 4/7, −5/7) comes out as ±1e-17 in floating
    # point, and a bound at +1e-17 would read "CI95 > 0": means within the sum's rounding error of 0 are 0.
    tol = 4 * v.size * np.finfo(np.float64).eps * float(np.abs(v).max(initial=0.0))
    means = np.append(v[indices].mean(1), v.mean())
    means[np.abs(means) <= tol] = 0.0
    return BootEstimate(means[-1], means[:-1], v.size)
