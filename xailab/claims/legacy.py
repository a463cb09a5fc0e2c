"""Record a paper's claim together with the values measured here and a verdict.

A notebook calls :func:`check`; it prints the claim, its measured values (one per line) and the
verdict, appends the record to a JSON-lines log (``$XAILAB_CLAIMS`` when the workbook runner sets
it) and raises :class:`ClaimFailed` when the claim does not hold, so a headless run fails loudly.
A claim that does not hold is recorded as "not reproduced (explained)" instead only when the
notebook passes ``explained_by=(condition, reason)`` and the condition — something the notebook
*measured in this run* that accounts for the failure (a failed premise, a leak, a ceiling) — is
true; the reason is recorded with the verdict. Otherwise the run fails.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

LOG_ENV = "XAILAB_CLAIMS"
NOTEBOOK_ENV = "XAILAB_NOTEBOOK"

REPRODUCED = "reproduced"
EXPLAINED = "not reproduced (explained)"
FAILED = "FAILED"


#: The claims recorded in this process, in order (what a notebook's summary shows).
_RECORDED: list = []


def recorded() -> list:
    """The claims checked so far in this process (a notebook kernel), in order."""
    return list(_RECORDED)


class ClaimFailed(AssertionError):
    """A claim the notebook expects to reproduce did not."""


def fmt(value) -> str:
    """A measured value as text: floats to 4 significant digits, containers item by item."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return str(value)


def _lines(value) -> list[list[str]]:
    """The measured values as ``[name, text]`` rows, one per named quantity."""
    if isinstance(value, dict):
        return [[str(k), fmt(v)] for k, v in value.items()]
    return [] if value is None else [["", fmt(value)]]


@dataclass
class Claim:
    paper: str
    claim: str
    value: str                      # every measured value on one line (see `fmt`)
    holds: bool
    verdict: str
    values: list = field(default_factory=list)   # [[name, text], ...]: one row per measured value
    reason: str = ""                              # why it does not reproduce (explained verdicts only)
    notebook: str = field(default_factory=lambda: os.environ.get(NOTEBOOK_ENV, ""))


def check(paper: str, claim: str, holds: bool, value=None, *, explained_by: tuple[bool, str] | None = None) -> Claim:
    """Print and record ``claim`` from ``paper`` with the measured ``value`` (a number, or a dict
    ``{name: value}`` naming each measured quantity as the notebook's text does).

    ``holds`` is the test the notebook computed from its measurements.  When it is false the call
    raises :class:`ClaimFailed`, unless ``explained_by=(condition, reason)`` is given and
    ``condition`` — measured in this run — is true: the claim is then recorded as not reproduced
    for that ``reason``.
    """
    holds = bool(holds)
    if explained_by is not None and not (isinstance(explained_by, tuple) and len(explained_by) == 2
                                         and isinstance(explained_by[1], str)):
        raise TypeError("explained_by must be a (condition, reason) pair")
    explained = not holds and explained_by is not None and bool(explained_by[0])
    verdict = REPRODUCED if holds else (EXPLAINED if explained else FAILED)
    reason = explained_by[1] if explained else ""
    record = Claim(paper=paper, claim=claim, value=fmt(value), holds=holds, verdict=verdict, values=_lines(value),
                   reason=reason)
    mark = "✔" if holds else ("≈" if explained else "✘")
    shown = "\n".join(f"      {k + ': ' if k else ''}{v}" for k, v in record.values)
    why = f"\n    because: {reason}" if reason else ""
    print(f"{mark} [{paper}] {claim}\n    measured:\n{shown}\n    verdict: {verdict}{why}")
    _RECORDED.append(record)
    log = os.environ.get(LOG_ENV)
    if log:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(record)) + "\n")
    if verdict == FAILED:
        unexplained = "" if explained_by is None else f"; the stated explanation ({explained_by[1]}) is not true here"
        raise ClaimFailed(f"claim did not reproduce: [{paper}] {claim} (measured {record.value}){unexplained}")
    return record
