"""The registered rules (register §1) that turn measured replicates into a verdict.

A claim's verdict comes from its components' estimates (:class:`xailab.stats.Estimate`): each component is
judged by the entry's form (§1.2) on its CI95 and CI90; a family is *reproduced* when every component is
(intersection–union), *contradicted* when one is after Holm's correction over the family (each component's
one-sided p-value for the contradiction branch that applies), *inconclusive* otherwise. A claim measured with
fewer replicates than registered is *inconclusive* with the note "under-powered", whatever its interval
shows. Premises and identities hold or fail on their registered checks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xailab.claims.register import Entry
from xailab.stats import Estimate

__all__ = ["ALPHA", "REPRODUCED", "CONTRADICTED", "INCONCLUSIVE", "NOT_MEASURED", "HOLDS", "FAILS", "VERDICTS",
           "Component", "judge", "decide_claim", "check_statistics"]

ALPHA = 0.05
REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED = "reproduced", "contradicted", "inconclusive", "not measured"
HOLDS, FAILS = "holds", "fails"
VERDICTS = (REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED, HOLDS, FAILS)


@dataclass
class Component:
    """One component of a claim: its estimate, the Δ and δ that apply to it, and how it was judged."""
    name: str
    estimate: Estimate
    delta: float | None
    margin: float | None
    outcome: str = ""
    q: float = math.inf           # contradiction p-value over its level: contradicted alone when q < 1

    def row(self) -> dict:
        ci95, ci90 = self.estimate.interval(0.95), self.estimate.interval(0.90)
        return {"name": self.name, "effect": self.estimate.mean, "ci95": [ci95.low, ci95.high],
                "ci90": [ci90.low, ci90.high], "n": self.estimate.n, "outcome": self.outcome}


def _inside(iv, low: float, high: float) -> bool:
    return low < iv.low and iv.high < high


def judge(form: str, est: Estimate, delta: float | None, margin: float | None) -> tuple[str, float]:
    """One component by the form's rule: its outcome (unadjusted), and ``q`` = the p-value of the contradiction
    branch that applies over that branch's level (``q < 1``: contradicted on its own; Holm compares ``q`` with
    ``1 / (k − j + 1)``)."""
    ci95, ci90 = est.interval(0.95), est.interval(0.90)
    if form == "S":
        reproduced = ci95.low > 0
        qs = [est.p_below(0.0) / (ALPHA / 2)]                              # CI95 < 0
        if margin is not None and margin > 0:                              # CI95 ∋ 0 and CI90 ⊂ (−δ, δ): TOST
            if ci95.low <= 0 <= ci95.high:
                qs.append(max(est.p_above(-margin), est.p_below(margin)) / ALPHA)
        q = min(qs)
    elif form == "SΔ":
        reproduced = ci95.low > 0 and ci95.high >= delta
        q = est.p_below(delta) / (ALPHA / 2)                               # upper end of CI95 < Δ
    elif form == "N":
        reproduced = ci90.low > -margin
        q = est.p_below(-margin) / ALPHA                                   # upper end of CI90 < −δ
    elif form == "E":
        reproduced = _inside(ci90, -margin, margin)
        q = min(est.p_above(margin), est.p_below(-margin)) / ALPHA        # CI90 > δ or CI90 < −δ
    else:
        raise ValueError(f"unknown form {form!r}")
    outcome = REPRODUCED if reproduced else CONTRADICTED if q < 1 else INCONCLUSIVE
    return outcome, q


def _holm_contradicts(qs: list[float]) -> bool:
    """Holm over the family: the j-th smallest q against 1/(k − j + 1), stopping at the first that fails. At
    least one component is rejected (the claim contradicted) exactly when the smallest passes, q < 1/k."""
    return min(qs) < 1 / len(qs)


def _pick(entry: Entry, value, name: str) -> float | None:
    if isinstance(value, dict):
        if name not in value:
            raise ValueError(f"{entry.id}: no registered value for component {name!r} (have {sorted(value)})")
        return float(value[name])
    return None if value is None else float(value)


def decide_claim(entry: Entry, estimates: dict[str, Estimate], *, delta=None, margin=None, whole_family: bool = True
                 ) -> tuple[str, list[Component], str]:
    """The verdict of claim ``entry`` from its components' ``estimates`` (``{name: Estimate}``), with ``delta``
    / ``margin`` taken from the register, or passed here where the register defines them from the run
    (``"run"``). ``whole_family=False`` accepts fewer components than registered (a CI-sized run, whose verdict
    is not recorded). Returns ``(verdict, components, note)``."""
    if entry.kind != "claim":
        raise ValueError(f"{entry.id} is a {entry.kind}, not a claim")
    if len(estimates) > entry.family or (whole_family and len(estimates) != entry.family):
        raise ValueError(f"{entry.id} is registered with a family of {entry.family}, got {len(estimates)} components")
    deltas = delta if entry.delta == "run" else entry.delta
    margins = margin if entry.margin == "run" else entry.margin
    if (entry.delta == "run" and delta is None) or (entry.margin == "run" and margin is None):
        raise ValueError(f"{entry.id}: the register defines its Δ/δ from the run; pass delta= or margin=")
    if (delta is not None and entry.delta != "run") or (margin is not None and entry.margin != "run"):
        raise ValueError(f"{entry.id}: Δ and δ are registered; they are not the notebook's to choose")
    comps = []
    for name, est in estimates.items():
        d, m = _pick(entry, deltas, name), _pick(entry, margins, name)
        outcome, q = judge(entry.form, est, d, m)
        comps.append(Component(name, est, d, m, outcome, q))
    replicates = min(c.estimate.n for c in comps)
    if replicates < entry.min_replicates:
        return INCONCLUSIVE, comps, f"under-powered: {replicates} replicates, the register asks for {entry.min_replicates}"
    if all(c.outcome == REPRODUCED for c in comps):
        return REPRODUCED, comps, ""
    if _holm_contradicts([c.q for c in comps]):
        return CONTRADICTED, comps, ""
    return INCONCLUSIVE, comps, ""


_OPS = {">=": lambda v, t: v >= t, "<=": lambda v, t: v <= t, ">": lambda v, t: v > t, "<": lambda v, t: v < t,
        "is": lambda v, t: bool(v) is True}


def _number(v) -> str:
    return f"{float(v):.4g}" if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) else repr(v)


def check_statistics(entry: Entry, statistics: dict) -> tuple[str, list[str]]:
    """A premise or identity: ``holds`` when every registered check passes on ``statistics`` (``{name: value}``,
    the names of the entry's checks); returns the verdict and the failed checks, described."""
    missing = [k for k in entry.checks if k not in statistics]
    if missing:
        raise ValueError(f"{entry.id}: the register checks {missing}; measure them (got {sorted(statistics)})")
    failed = []
    for name, (op, threshold) in entry.checks.items():
        value = statistics[name]
        if not _OPS[op](value, threshold):
            failed.append(f"{name} = {_number(value)} (registered: {op} {_number(threshold)})" if op != "is"
                          else f"{name} is false")
    return (HOLDS if not failed else FAILS), failed
