"""The workbook's report: ``claims.json``, ``claims.md`` and ``index.html`` (a summary per paper
first, then every claim with its measured values one per line, then each notebook's key figure)."""
from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path

from xailab.claims import EXPLAINED, FAILED, REPRODUCED
from xailab.utils import write_atomic

KEY_FIGURE_TAG = "key-figure"


def key_figure(notebook: Path) -> str | None:
    """The PNG (base64) of the cell tagged ``key-figure``, else of the last figure in the notebook."""
    if not notebook.exists():
        return None
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    figures, tagged = [], None
    for cell in cells:
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png:
                figures.append(png)
                if KEY_FIGURE_TAG in cell.get("metadata", {}).get("tags", []) and tagged is None:
                    tagged = png
    chosen = tagged or (figures[-1] if figures else None)
    return "".join(chosen) if isinstance(chosen, list) else chosen


def summary(outcomes) -> list[dict]:
    """Per paper, in order of appearance: claims checked, reproduced, explained, failed (a notebook
    that did not finish counts as one failure of every paper it had recorded, or of its own name)."""
    papers: dict[str, Counter] = {}
    for o in outcomes:
        for c in o.claims:
            papers.setdefault(c["paper"], Counter())[c["verdict"]] += 1
        if not o.ok:
            for paper in {c["paper"] for c in o.claims} or {o.name}:
                papers.setdefault(paper, Counter())["notebook failed"] += 1
    return [dict(paper=p, claims=sum(n[v] for v in (REPRODUCED, EXPLAINED, FAILED)), reproduced=n[REPRODUCED],
                 explained=n[EXPLAINED], failed=n[FAILED] + n["notebook failed"]) for p, n in papers.items()]


def _value_lines(c: dict) -> list[str]:
    rows = c.get("values") or ([["", c["value"]]] if c.get("value") else [])
    return [f"{k}: {v}" if k else v for k, v in rows]


def _verdict(c: dict) -> str:
    return f"{c['verdict']}: {c['reason']}" if c.get("reason") else c["verdict"]


def claims_markdown(outcomes, quick: bool) -> str:
    mode = "quick (CI-sized)" if quick else "default"
    lines = ["# What reproduces", "",
             f"Mode: {mode}. Regenerate with `make workbook`{' QUICK=1' if quick else ''}.", "",
             "| paper | claims | reproduced | not reproduced (explained) | failed |", "|---|---|---|---|---|"]
    lines += [f"| {s['paper']} | {s['claims']} | {s['reproduced']} | {s['explained']} | {s['failed']} |"
              for s in summary(outcomes)]
    lines += ["", "| paper | claim | measured | verdict | notebook |", "|---|---|---|---|---|"]
    esc = lambda t: t.replace("|", "\\|").replace("\n", " ")  # noqa: E731
    for o in outcomes:
        for c in o.claims:
            measured = "<br>".join(esc(line) for line in _value_lines(c))
            lines.append(f"| {esc(c['paper'])} | {esc(c['claim'])} | {measured} | {esc(_verdict(c))} | {o.name} |")
        if not o.ok:
            lines.append(f"| — | notebook did not finish | {esc(o.error)} | FAILED | {o.name} |")
    return "\n".join(lines) + "\n"


def index_html(outcomes, out: Path, quick: bool) -> str:
    esc = html.escape
    head = "".join(f"<tr><td>{esc(s['paper'])}</td><td>{s['claims']}</td><td class='ok'>{s['reproduced']}</td>"
                   f"<td class='honest'>{s['explained']}</td><td class='{'bad' if s['failed'] else ''}'>"
                   f"{s['failed']}</td></tr>" for s in summary(outcomes))
    rows = []
    for o in outcomes:
        for c in o.claims:
            css = "ok" if c["holds"] else ("honest" if c["verdict"] == EXPLAINED else "bad")
            measured = "<br>".join(esc(line) for line in _value_lines(c))
            rows.append(f"<tr class='{css}'><td>{esc(c['paper'])}</td><td>{esc(c['claim'])}</td>"
                        f"<td class='values'>{measured}</td><td>{esc(_verdict(c))}</td>"
                        f"<td><a href='{esc(o.name)}.html'>{esc(o.name)}</a></td></tr>")
        if not o.ok:
            rows.append(f"<tr class='bad'><td>—</td><td>notebook did not finish</td><td>{esc(o.error)}</td>"
                        f"<td>FAILED</td><td><a href='{esc(o.name)}.html'>{esc(o.name)}</a></td></tr>")
    cards = []
    for o in outcomes:
        png = key_figure(out / f"{o.name}.ipynb")
        img = f"<img src='data:image/png;base64,{png}' alt='key figure of {esc(o.name)}'>" if png else ""
        status = f"{o.seconds:.0f} s" if o.ok else f"failed: {esc(o.error)}"
        cards.append(f"<div class='card'><h3><a href='{esc(o.name)}.html'>{esc(o.name)}</a></h3>"
                     f"<p>{status}</p>{img}</div>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>xailab workbook</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; width: 100%; font-size: 0.9rem; margin-bottom: 1.5rem; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 0.35rem 0.5rem; text-align: left; vertical-align: top; }}
td.values {{ font-family: ui-monospace, monospace; font-size: 0.8rem; white-space: nowrap; }}
td.ok, tr.ok td:nth-child(4) {{ color: #1a7f37; }} td.honest, tr.honest td:nth-child(4) {{ color: #9a6700; }}
td.bad, tr.bad td:nth-child(4) {{ color: #cf222e; font-weight: bold; }}
.cards {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 1rem; }}
.card {{ border: 1px solid #ddd; border-radius: 8px; padding: 0.5rem 1rem; }}
.card img {{ max-width: 100%; }}
</style></head><body>
<h1>xailab — what reproduces</h1>
<p>Mode: {'quick (CI-sized)' if quick else 'default'}. Each claim was checked on data its notebook generated;
"not reproduced (explained)" means the notebook measured why it does not hold in this run.</p>
<table><tr><th>paper</th><th>claims</th><th>reproduced</th><th>not reproduced (explained)</th><th>failed</th></tr>
{head}
</table>
<table><tr><th>paper</th><th>claim</th><th>measured</th><th>verdict</th><th>notebook</th></tr>
{''.join(rows)}
</table>
<h2>Notebooks</h2>
<div class="cards">{''.join(cards)}</div>
</body></html>
"""


def write_report(outcomes, out: Path, quick: bool, parameters: dict) -> None:
    """claims.json, claims.md, index.html, then manifest.json (last: the mark of a finished run)."""
    from dataclasses import asdict

    claims = [dict(c, notebook=o.name) for o in outcomes for c in o.claims]
    write_atomic(out / "claims.json", json.dumps(claims, indent=1) + "\n")
    write_atomic(out / "claims.md", claims_markdown(outcomes, quick))
    write_atomic(out / "index.html", index_html(outcomes, out, quick))
    manifest = {"quick": quick, "parameters": parameters, "notebooks": [asdict(o) for o in outcomes]}
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
