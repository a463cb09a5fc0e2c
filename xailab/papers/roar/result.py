"""A tidy, pandas-free table of ROAR accuracies: one record per (estimator, variant, fraction, seed)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from xailab.stats import Interval, t_interval

#: ``roar`` remove the most relevant fraction and retrain; ``kar`` (keep and retrain) remove the least
#: relevant fraction and retrain; ``morf`` / ``lerf`` the same two removals (most / least relevant
#: first) scored by the explained model itself, without retraining (ROAD's MoRF and LeRF curves when
#: the fill is ``"noisy_linear"``).
VARIANTS = ("roar", "kar", "morf", "lerf")
#: The variants that retrain, and those that score the explained model as it is.
RETRAINED, NOT_RETRAINED = ("roar", "kar"), ("morf", "lerf")


@dataclass
class RoarResult:
    """Records ``{"estimator", "variant", "fraction", "seed", "accuracy"}`` (retrained ones also
    ``"train_accuracy"``).

    ``fraction`` is always the fraction of features *removed*: for ``kar`` and ``lerf`` the least
    relevant ones (the top ``1 - fraction`` are kept), for ``roar`` and ``morf`` the most relevant.
    ``morf`` and ``lerf`` score the explained model itself on the modified test set (``seed``
    None).  ``meta`` holds the sweep's settings and ``chance``.
    """
    records: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.records)

    @property
    def estimators(self) -> list[str]:
        return list(dict.fromkeys(r["estimator"] for r in self.records))

    @property
    def fractions(self) -> list[float]:
        return sorted({r["fraction"] for r in self.records})

    @property
    def variants(self) -> list[str]:
        return [v for v in VARIANTS if any(r["variant"] == v for r in self.records)]

    def filter(self, estimator=None, variant=None, fraction=None) -> "RoarResult":
        """The records matching every given field (a value or a collection of values)."""
        def ok(value, want):
            if want is None:
                return True
            if isinstance(want, (list, tuple, set, frozenset)):
                return value in want
            return value == want

        rows = [r for r in self.records if ok(r["estimator"], estimator) and ok(r["variant"], variant)
                and ok(r["fraction"], fraction)]
        return RoarResult(rows, dict(self.meta))

    def mean(self) -> list[dict]:
        """One row per (estimator, variant, fraction): ``mean``, ``std`` (sample, 0 for one run), ``n``."""
        groups: dict[tuple, list[float]] = {}
        for r in self.records:
            groups.setdefault((r["estimator"], r["variant"], r["fraction"]), []).append(r["accuracy"])
        rows = []
        for (est, var, frac), accs in groups.items():
            m = sum(accs) / len(accs)
            sd = math.sqrt(sum((a - m) ** 2 for a in accs) / (len(accs) - 1)) if len(accs) > 1 else 0.0
            rows.append({"estimator": est, "variant": var, "fraction": frac, "mean": m, "std": sd,
                         "n": len(accs)})
        return rows

    def _removed(self, estimator: str, variant: str) -> list[float]:
        # the fractions above 0 of one estimator's curve: variants may be measured at different fractions
        return [f for f in self.filter(estimator, variant).fractions if f > 0]

    def accuracy(self, estimator: str, fraction: float, variant: str = "roar") -> float:
        """Mean accuracy of one cell (over seeds)."""
        accs = [r["accuracy"] for r in self.filter(estimator, variant, fraction)]
        if not accs:
            raise KeyError(f"no records for estimator={estimator!r}, variant={variant!r}, fraction={fraction!r}; "
                           f"estimators: {self.estimators}, fractions: {self.fractions}")
        return sum(accs) / len(accs)

    def mean_accuracy(self, estimator: str, fractions=None, variant: str = "roar") -> float:
        """Mean over ``fractions`` (default: every fraction above 0 measured for this estimator and
        variant) of :meth:`accuracy`: one number per estimator, lower when removing its top features hurts more."""
        fractions = self._removed(estimator, variant) if fractions is None else list(fractions)
        return float(np.mean([self.accuracy(estimator, f, variant) for f in fractions]))

    def per_seed(self, estimator: str, fractions=None, variant: str = "roar") -> dict:
        """``{seed: mean accuracy over fractions}`` (default fractions: every one above 0 measured for this
        estimator and variant)."""
        fractions = self._removed(estimator, variant) if fractions is None else list(fractions)
        out: dict = {}
        for r in self.filter(estimator, variant, list(fractions)):
            out.setdefault(r["seed"], []).append(r["accuracy"])
        return {s: float(np.mean(v)) for s, v in out.items() if len(v) == len(fractions)}

    def paired(self, a: str, b: str, fractions=None, variant: str = "roar", variant_b: str | None = None
               ) -> list[float]:
        """Per replicate (seed), ``a``'s mean accuracy over ``fractions`` minus ``b``'s (``b`` in ``variant_b``,
        default the same variant): the paired differences the register's t-intervals are taken over, in seed
        order. Seeds measured for only one of the two are left out."""
        pa = self.per_seed(a, fractions, variant)
        pb = self.per_seed(b, fractions, variant if variant_b is None else variant_b)
        d = [pa[s] - pb[s] for s in sorted(pa, key=str) if s in pb]
        if not d:
            raise KeyError(f"no common seeds for {a!r} ({variant}) and {b!r} ({variant_b or variant})")
        return d

    def difference(self, a: str, b: str, fractions=None, variant: str = "roar") -> dict:
        """Accuracy of ``a`` minus accuracy of ``b`` (mean over ``fractions``), paired by seed (the
        same seed initialises both retrained models): ``{"mean", "se", "n"}`` with the standard
        error over seeds (0 for one seed)."""
        pa, pb = self.per_seed(a, fractions, variant), self.per_seed(b, fractions, variant)
        d = [pa[s] - pb[s] for s in pa if s in pb]
        if not d:
            raise KeyError(f"no common seeds for {a!r} and {b!r} in variant {variant!r}")
        se = float(np.std(d, ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0
        return {"mean": float(np.mean(d)), "se": se, "n": len(d)}

    def interval(self, a: str, b: str, fractions=None, variant: str = "roar", *, level: float = 0.95,
                 family: int = 1) -> Interval:
        """Accuracy of ``a`` minus accuracy of ``b`` paired by seed (as :meth:`difference`), with its
        Student-t interval over the seeds (Bonferroni over ``family`` comparisons)."""
        pa, pb = self.per_seed(a, fractions, variant), self.per_seed(b, fractions, variant)
        d = [pa[s] - pb[s] for s in pa if s in pb]
        if not d:
            raise KeyError(f"no common seeds for {a!r} and {b!r} in variant {variant!r}")
        return t_interval(d, level=level, family=family)

    def collapsed(self) -> list[dict]:
        """The retrained records whose optimisation collapsed (register, ROAR-7): a training accuracy within
        ``0.1 (1 − 1/K)`` of chance while the median training accuracy of its cell (estimator, variant,
        fraction) exceeds ``1/K + 0.5 (1 − 1/K)`` — an optimiser failure, not a loss of information (a cell
        whose every model stays near chance has lost its information). Needs ``meta["chance"]`` = 1/K."""
        chance = self.meta["chance"]
        cells: dict[tuple, list[dict]] = {}
        for r in self.records:
            if r.get("train_accuracy") is not None:
                cells.setdefault((r["estimator"], r["variant"], r["fraction"]), []).append(r)
        out = []
        for rows in cells.values():
            median = float(np.median([r["train_accuracy"] for r in rows]))
            if median > chance + 0.5 * (1 - chance):
                out += [r for r in rows if r["train_accuracy"] - chance <= 0.1 * (1 - chance)]
        return out

    def curve(self, estimator: str, variant: str = "roar") -> tuple[list[float], list[list[float]]]:
        """``(fractions, runs)``: ``runs[k]`` = accuracies of run k at each fraction (seeds as runs)."""
        sub = self.filter(estimator, variant)
        fracs = sub.fractions
        by_seed: dict = {}
        for r in sub:
            by_seed.setdefault(r["seed"], {})[r["fraction"]] = r["accuracy"]
        runs = [[row.get(f, math.nan) for f in fracs] for row in by_seed.values()]
        return fracs, runs

    def summary(self, variant: str = "roar", *, digits: int = 3) -> str:
        """A text table: estimators as rows, fractions as columns, ``mean±std`` cells."""
        rows = [r for r in self.mean() if r["variant"] == variant]
        fracs = sorted({r["fraction"] for r in rows})
        ests = list(dict.fromkeys(r["estimator"] for r in rows))
        cell = {(r["estimator"], r["fraction"]): r for r in rows}
        width = max([len("estimator")] + [len(e) for e in ests]) + 2
        head = f"{variant} accuracy".ljust(width) + "".join(f"{f:>13.0%}" for f in fracs)
        lines = [head]
        for e in ests:
            parts = []
            for f in fracs:
                r = cell.get((e, f))
                parts.append(f"{r['mean']:.{digits}f}±{r['std']:.{digits}f}".rjust(13) if r else " " * 13)
            lines.append(e.ljust(width) + "".join(parts))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"RoarResult({len(self.records)} records, estimators={self.estimators}, "
                f"fractions={self.fractions}, variants={self.variants})")


def rank_agreement(scores_a, scores_b) -> dict:
    """How alike two benchmarks rank the same estimators: Spearman's ``rho`` between two
    ``{estimator: score}`` mappings (their common estimators) and the one-sided p-value of
    ``rho > 0`` under unrelated rankings (``scipy.stats.spearmanr``). Returns ``{"rho", "p",
    "n"}``; a small ``p`` says the agreement is more than two unrelated rankings would show."""
    from scipy.stats import spearmanr

    common = [e for e in scores_a if e in scores_b]
    if len(common) < 3:
        raise ValueError(f"rank_agreement needs at least 3 common estimators, got {common}")
    res = spearmanr([scores_a[e] for e in common], [scores_b[e] for e in common], alternative="greater")
    return {"rho": float(res.statistic), "p": float(res.pvalue), "n": len(common)}
