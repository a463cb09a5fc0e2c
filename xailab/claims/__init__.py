"""Registered verdicts: every claim of the workbook decided by one protocol written before the run.

The register (``shared/claims/REGISTER.md``) lives here as data (:mod:`.register`); :mod:`.protocol` holds its
rules. A notebook measures, then hands the measurement to one of:

- :func:`decide` — a **claim** of a paper: *reproduced*, *contradicted* or *inconclusive* by the registered form,
  family and minimum replicates (*not measured* in quick mode). A claim never stops the run: a contradicted or
  inconclusive claim is a finding;
- :func:`premise` / :func:`identity` — a condition an experiment needs, or a property the code must have:
  *holds*, or the row is recorded and :class:`PremiseFailed` / :class:`IdentityFailed` stops the notebook;
- :func:`probe` — a measured quantity shown next to a verdict to explain it; it never changes one;
- :func:`not_measured` — a registered id this notebook does not (yet) measure, with the reason.

Every call prints its row and appends it to the run's JSON-lines log (``$XAILAB_CLAIMS``, set by the workbook
runner), from which the report (``build/claims.json``, ``claims.md``, ``index.html``) is written.
Estimates come from :func:`over_replicates` (Student t over seeds, pairs, splits), :func:`slope` (an OLS slope
over independent replicates) or :func:`over_images` (a paired bootstrap over images, B = 10,000, the same
resampled images for every component of one claim).
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Mapping

from xailab.claims.protocol import (CONTRADICTED, FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, REPRODUCED, VERDICTS,
                                    check_statistics, decide_claim)
from xailab.claims.register import REGISTER, Entry, entry
from xailab.stats import BootEstimate, Estimate, TEstimate, boot_estimate, bootstrap_indices
from xailab.utils import derive_seed

__all__ = ["CONTRADICTED", "FAILS", "HOLDS", "INCONCLUSIVE", "LOG_ENV", "NOTEBOOK_ENV", "NOT_MEASURED", "REGISTER",
           "REPRODUCED", "VERDICTS", "Entry", "IdentityFailed", "PremiseFailed", "decide", "effect_text", "entry",
           "identity", "not_measured", "over_images", "over_replicates", "premise", "probe", "rows", "slope", "start",
           "stop_unless", "table"]

#: Environment variables the workbook runner sets for each notebook's kernel.
LOG_ENV = "XAILAB_CLAIMS"
NOTEBOOK_ENV = "XAILAB_NOTEBOOK"
#: Bootstrap resamples of an image-unit claim (register §1.3).
N_BOOT = 10_000


class PremiseFailed(AssertionError):
    """A registered premise does not hold: the experiment is invalid, and the notebook stops."""


class IdentityFailed(AssertionError):
    """A registered identity does not hold: the code is wrong, and the notebook stops."""


class _Session:
    """What the running notebook recorded: its name, mode and seed, its rows and probes in order."""

    def __init__(self):
        self.notebook = os.environ.get(NOTEBOOK_ENV, "")
        self.quick, self.seed = False, 0
        self.rows: list[dict] = []
        self.probes: dict[str, dict] = {}


_SESSION = _Session()


def start(*, quick: bool = False, seed: int = 0, notebook: str | None = None) -> None:
    """Begin a notebook's record: its mode (quick mode records every claim as *not measured*), its seed (the
    root of every derived seed) and its name (default: ``$XAILAB_NOTEBOOK``)."""
    global _SESSION
    _SESSION = _Session()
    _SESSION.quick, _SESSION.seed = bool(quick), int(seed)
    if notebook is not None:
        _SESSION.notebook = notebook


# ----------------------------------------------------------------------------------------------- estimates
def over_replicates(components: Mapping[str, object]) -> dict[str, TEstimate]:
    """``{name: per-replicate values}`` -> Student-t estimates (df = n − 1): seeds, network pairs, splits."""
    return {name: v if isinstance(v, Estimate) else TEstimate.of(v) for name, v in components.items()}


def slope(x, y) -> TEstimate:
    """The pooled OLS slope of ``y`` on ``x`` over independent replicates at one level each (df = n − 2)."""
    return TEstimate.slope(x, y)


def over_images(components: Mapping[str, object], *, id: str, n_boot: int = N_BOOT,
                strata=None) -> dict[str, BootEstimate]:
    """``{name: per-image values}`` (the same images, in the same order, for every component) -> paired
    bootstrap estimates from one set of resampled images, seeded from the notebook's seed and ``id``;
    ``strata`` (a label per image: the network it was explained on) resamples within each label."""
    sizes = {len(v) for v in components.values()}
    if len(sizes) != 1:
        raise ValueError(f"{id}: every component must pair up the same images, got sizes {sorted(sizes)}")
    idx = image_resamples(sizes.pop(), id=id, n_boot=n_boot, strata=strata)
    return {name: boot_estimate(v, idx) for name, v in components.items()}


def image_resamples(n: int, *, id: str, n_boot: int = N_BOOT, strata=None) -> np.ndarray:
    """The ``(n_boot, n)`` resampled image indices of claim ``id`` (seeded from the notebook's seed and ``id``;
    within each label of ``strata`` when given), for a statistic that is not a mean over images (recompute it on
    each resample, then :class:`BootEstimate`)."""
    return bootstrap_indices(n, n_boot, derive_seed(_SESSION.seed, id, "bootstrap"), strata=strata)


# ----------------------------------------------------------------------------------------------- recording
def _number(v):
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f if math.isfinite(f) else str(f)


def _record(row: dict) -> dict:
    row = {"record": "verdict", "notebook": _SESSION.notebook, **row}
    _SESSION.rows.append(row)
    _log(row)
    _print(row)
    return row


def _log(row: dict) -> None:
    log = os.environ.get(LOG_ENV)
    if log:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def effect_text(row: Mapping) -> str:
    """A row's effect and interval as the tables show them. A claim of several components (two metrics, a family)
    names the component shown, the one that decided, and gives the others beside it with their outcomes; a family
    of more than four components gives its outcomes counted."""
    if row.get("effect") is None:
        return ""

    def span(mean, iv):
        return f"{mean:+.4g} [{iv[0]:+.4g}, {iv[1]:+.4g}]"

    def ci(c):   # at the row's own level (CI90 for forms N and E)
        return c["ci90"] if row.get("level") == 0.90 else c["ci95"]

    comps = row.get("components") or []
    if len(comps) < 2:
        return span(row["effect"], row["interval"])
    shown = next(c for c in comps if c["name"] == row["component"])
    others = [c for c in comps if c is not shown]
    if len(comps) <= 4:
        rest = "; ".join(f"{c['name']}: {span(c['effect'], ci(c))} {c['outcome']}" for c in others)
    else:
        counts = Counter(c["outcome"] for c in comps)
        rest = f"of {len(comps)} components " + ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
    return f"{shown['name']}: {span(row['effect'], row['interval'])} {shown['outcome']}; {rest}"


def _print(row: dict) -> None:
    mark = {REPRODUCED: "✔", HOLDS: "✔", CONTRADICTED: "✘", FAILS: "✘"}.get(row["verdict"], "·")
    lines = [f"{mark} {row['id']} [{row['paper']}] {row['claim']} — {row['verdict']}"]
    if row.get("effect") is not None:
        lines.append(f"    effect {_fmt(row['effect'])}, interval {_fmt(row['interval'])} ({row.get('level')}), "
                     f"threshold {_fmt(row['threshold'])}, replicates {row['replicates']}")
    for c in row.get("components", []) if len(row.get("components", [])) > 1 else []:
        lines.append(f"      {c['name']}: {_fmt(c['effect'])} CI95 {_fmt(c['ci95'])} {c['outcome']}")
    for k, v in row.get("statistics", {}).items():
        lines.append(f"    {k}: {_fmt(v)}")
    if row.get("note"):
        lines.append(f"    note: {row['note']}")
    print("\n".join(lines))


def _base(e: Entry, setting: str | None) -> dict:
    return {"id": e.id, "kind": e.kind, "paper": e.paper, "claim": e.statement,
            "setting": e.setting if setting is None else setting}


def decide(id: str, estimates: Mapping[str, Estimate], *, setting: str | None = None, delta=None, margin=None,
           probes: Mapping | None = None, note: str = "") -> dict:
    """Decide the registered claim ``id`` from its components' estimates and record the row (in quick mode
    the row is *not measured*: CI-sized runs decide no claim). ``delta`` / ``margin`` only where the register
    defines them from the run. Returns the row."""
    e = entry(id)
    for name, value in (probes or {}).items():
        probe(id, name, value)
    verdict, comps, why = decide_claim(e, dict(estimates), delta=delta, margin=margin, whole_family=not _SESSION.quick)
    if _SESSION.quick:
        verdict, why = NOT_MEASURED, "quick mode (CI-sized): claims are not decided"
    decisive = _decisive(verdict, comps, e.form)
    ci = decisive.estimate.interval(0.90 if e.form in ("N", "E") else 0.95)
    threshold = {"Δ": decisive.delta} if e.form == "SΔ" else {"δ": decisive.margin}
    return _record({**_base(e, setting), "form": e.form, "verdict": verdict, "effect": decisive.estimate.mean,
                    "interval": [ci.low, ci.high], "level": ci.level, "component": decisive.name,
                    "threshold": threshold, "replicates": min(c.estimate.n for c in comps),
                    "components": [c.row() for c in comps], "note": "; ".join(x for x in (why, note) if x)})


def _decisive(verdict: str, comps, form: str):
    """The component a row shows: the one that contradicts (smallest q), else the one closest to failing its
    registered rule (smallest slack)."""
    if verdict == CONTRADICTED:
        return min(comps, key=lambda c: c.q)

    def slack(c):
        ci95, ci90 = c.estimate.interval(0.95), c.estimate.interval(0.90)
        if form == "S":
            return ci95.low
        if form == "SΔ":
            return min(ci95.low, ci95.high - c.delta)
        if form == "N":
            return ci90.low + c.margin
        return min(ci90.low + c.margin, c.margin - ci90.high)

    return min(comps, key=slack)


def _statistics(id: str, kind: str, statistics: Mapping, *, setting, replicates, note) -> dict:
    e = entry(id)
    if e.kind != kind:
        raise ValueError(f"{id} is registered as a {e.kind}, not a {kind}")
    verdict, failed = check_statistics(e, statistics)
    row = _record({**_base(e, setting), "verdict": verdict,
                   "statistics": {k: _number(v) for k, v in statistics.items()},
                   "threshold": {k: f"{op} {t:.4g}" if isinstance(t, float) else f"{op} {t}" for k, (op, t) in e.checks.items()}, "replicates": replicates,
                   "note": "; ".join(x for x in (note, *failed) if x)})
    if verdict == FAILS:
        error = PremiseFailed if kind == "premise" else IdentityFailed
        raise error(f"{id} {kind} does not hold ({e.statement}): " + "; ".join(failed))
    return row


def premise(id: str, statistics: Mapping, *, setting: str | None = None, replicates: int | None = None,
            note: str = "") -> dict:
    """Check the registered premise ``id`` on ``statistics`` (``{check name: value}``); record the row; raise
    :class:`PremiseFailed` when it does not hold (the experiment is invalid)."""
    return _statistics(id, "premise", statistics, setting=setting, replicates=replicates, note=note)


def stop_unless(id: str, statistics: Mapping, *, setting: str | None = None, replicates: int | None = None,
                note: str = "") -> None:
    """Check the registered premise or identity ``id`` early, as soon as part of its inputs exist (one arm of an
    experiment): when it fails, record the row and stop the run as :func:`premise` does, before anything is
    computed from the failing part; when it holds, record nothing (the notebook records the whole check later)."""
    e = entry(id)
    if check_statistics(e, statistics)[0] == FAILS:
        _statistics(id, e.kind, statistics, setting=setting, replicates=replicates, note=note)


def identity(id: str, statistics: Mapping, *, note: str = "") -> dict:
    """Check the registered identity ``id``; record the row; raise :class:`IdentityFailed` when it fails."""
    return _statistics(id, "identity", statistics, setting="", replicates=None, note=note)


def probe(id: str, name: str, value) -> None:
    """Record a measured quantity next to the verdict of ``id`` (it explains a verdict, never changes one)."""
    e = entry(id)
    _SESSION.probes.setdefault(e.id, {})[str(name)] = _number(value)
    _log({"record": "probe", "notebook": _SESSION.notebook, "id": e.id, "name": str(name), "value": _number(value)})


def not_measured(id: str, reason: str, *, setting: str | None = None) -> dict:
    """Record that this notebook does not measure the registered ``id`` (shown and counted, never hidden)."""
    e = entry(id)
    return _record({**_base(e, setting), "verdict": NOT_MEASURED, "note": reason})


def rows() -> list[dict]:
    """The rows this notebook recorded, each with the probes recorded for its id."""
    return [{**r, "probes": dict(_SESSION.probes.get(r["id"], {}))} for r in _SESSION.rows]


def table() -> str:
    """This notebook's rows as a Markdown table: id, verdict, effect and interval, threshold, replicates."""
    from xailab.viz import markdown_table   # matplotlib only when a table is drawn

    out = []
    for r in rows():
        out.append([r["id"], r["claim"], r["verdict"], effect_text(r),
                    ", ".join(f"{k} {_fmt(v)}" for k, v in (r.get("threshold") or {}).items()),
                    "" if r.get("replicates") is None else r["replicates"], r.get("note", "")])
    return markdown_table(["id", "statement", "verdict", "effect [interval]", "threshold", "replicates", "note"], out,
                          "{}")
