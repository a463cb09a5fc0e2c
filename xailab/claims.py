"""Record a paper's claim together with the value measured here and a verdict.

A notebook calls :func:`check`; it prints one line, appends the claim to a JSON-lines log
(``$XAILAB_CLAIMS`` when the workbook runner sets it) and raises :class:`ClaimFailed` when the
claim does not hold, so a headless run fails loudly.  ``expected="not at this scale"`` style
honest verdicts are recorded with ``honest=True``: the claim is reported as not reproduced but
the notebook goes on, because the notebook explains why.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

LOG_ENV = "XAILAB_CLAIMS"


class ClaimFailed(AssertionError):
    """A claim the notebook expects to reproduce did not."""


@dataclass
class Claim:
    paper: str
    claim: str
    value: str
    holds: bool
    verdict: str
    notebook: str = field(default_factory=lambda: os.environ.get("XAILAB_NOTEBOOK", ""))


RECORDED: list[Claim] = []


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def check(paper: str, claim: str, holds: bool, value=None, *, honest: bool = False) -> Claim:
    """Print and record ``claim`` from ``paper`` with the measured ``value``.

    ``holds`` is the test the notebook computed from its measurements.  When it is false the
    call raises :class:`ClaimFailed`, unless ``honest=True``: the notebook then states, next to
    the cell, that the claim does not reproduce at this scale, and the verdict says so.
    """
    holds = bool(holds)
    verdict = "reproduced" if holds else ("not reproduced (explained)" if honest else "FAILED")
    record = Claim(paper=paper, claim=claim, value=_fmt(value), holds=holds, verdict=verdict)
    RECORDED.append(record)
    mark = "✔" if holds else ("≈" if honest else "✘")
    print(f"{mark} [{paper}] {claim}\n    measured: {record.value}\n    verdict: {verdict}")
    log = os.environ.get(LOG_ENV)
    if log:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(asdict(record)) + "\n")
    if not holds and not honest:
        raise ClaimFailed(f"claim did not reproduce: [{paper}] {claim} (measured {record.value})")
    return record
