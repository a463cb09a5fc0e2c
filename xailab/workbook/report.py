"""The workbook's report: ``claims.json``, ``claims.md`` and ``index.html``.

One row per registered id (``xailab.claims.REGISTER``), in the register's order: the row a notebook recorded
(with the probes recorded for its id), or *not measured* when no notebook of the run measured it. The
summary counts verdicts per paper; then every id with its effect, interval, threshold and probes; then the
ids not measured; then each notebook's key figure.
"""
from __future__ import annotations

import html
import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from xailab.claims import NOT_MEASURED, REGISTER, VERDICTS, effect_text
from xailab.utils import write_atomic

KEY_FIGURE_TAG = "key-figure"
#: The verdicts of the summary table, in order.
COLUMNS = ("reproduced", "contradicted", "inconclusive", "holds", "fails", NOT_MEASURED)


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


def register_rows(outcomes) -> list[dict]:
    """One row per registered id: the last row a notebook recorded for it (with its probes), else not measured."""
    recorded, probes = {}, {}
    for o in outcomes:
        for r in o.claims:
            if r.get("record") == "probe":
                probes.setdefault(r["id"], {})[r["name"]] = r["value"]
            else:
                recorded[r["id"]] = dict(r, notebook=o.name)
    rows = []
    for e in REGISTER:
        row = recorded.get(e.id) or {"id": e.id, "kind": e.kind, "paper": e.paper, "claim": e.statement,
                                     "setting": e.setting, "verdict": NOT_MEASURED, "notebook": e.notebook,
                                     "note": "no notebook of this run measured it"}
        row.pop("record", None)
        rows.append({"effect": None, "interval": None, "threshold": None, "replicates": None, **row,
                     "probes": probes.get(e.id, {})})
    return rows


def summary(rows, outcomes=()) -> list[dict]:
    """Per paper, in the register's order: the count of each verdict; notebooks that did not finish."""
    papers: dict[str, Counter] = {}
    for r in rows:
        papers.setdefault(r["paper"], Counter())[r["verdict"]] += 1
    failed = [o.name for o in outcomes if not o.ok]
    return [dict(paper=p, ids=sum(n.values()), **{v: n[v] for v in COLUMNS}, notebooks_failed=failed)
            for p, n in papers.items()]


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    return str(v)


def _cells(r: dict) -> list[str]:
    effect = effect_text(r)
    stats = "; ".join(f"{k}: {_fmt(v)}" for k, v in (r.get("statistics") or {}).items())
    probes = "; ".join(f"{k}: {_fmt(v)}" for k, v in (r.get("probes") or {}).items())
    return [r["id"], r["claim"], r.get("setting", ""), r["verdict"], effect or stats, _fmt(r.get("threshold")),
            _fmt(r.get("replicates")), probes, r.get("note", ""), r.get("notebook", "")]


HEADER = ["id", "claim", "setting", "verdict", "effect [interval] / statistics", "threshold", "replicates", "probes",
          "note", "notebook"]


def claims_markdown(outcomes, quick: bool) -> str:
    rows = register_rows(outcomes)
    mode = "quick (CI-sized: premises and identities only)" if quick else "default"
    esc = lambda t: str(t).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["# What reproduces", "", f"Mode: {mode}. Regenerate with `make workbook`{' QUICK=1' if quick else ''}. "
             "Each id is decided by the rule registered before the run (`shared/claims/REGISTER.md`).", "",
             "| paper | ids | " + " | ".join(COLUMNS) + " |", "|---" * (2 + len(COLUMNS)) + "|"]
    lines += [f"| {s['paper']} | {s['ids']} | " + " | ".join(str(s[c]) for c in COLUMNS) + " |" for s in summary(rows)]
    failed = [o for o in outcomes if not o.ok]
    if failed:
        lines += [""] + [f"**{o.name} did not finish:** {esc(o.error)}" for o in failed]
    lines += ["", "| " + " | ".join(HEADER) + " |", "|---" * len(HEADER) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in _cells(r)) + " |" for r in rows if r["verdict"] != NOT_MEASURED]
    missing = [r for r in rows if r["verdict"] == NOT_MEASURED]
    if missing:
        lines += ["", "## Not measured", ""] + [f"- {r['id']} ({r['paper']}): {r['claim']} — {r.get('note', '')}"
                                                 for r in missing]
    return "\n".join(lines) + "\n"


_STYLE = {"reproduced": "ok", "holds": "ok", "contradicted": "bad", "fails": "bad", "inconclusive": "open",
          NOT_MEASURED: "open"}


def index_html(outcomes, out: Path, quick: bool) -> str:
    esc = html.escape
    rows = register_rows(outcomes)
    head = "".join(f"<tr><td>{esc(s['paper'])}</td><td>{s['ids']}</td>"
                   + "".join(f"<td class='{_STYLE[c]}'>{s[c]}</td>" for c in COLUMNS) + "</tr>" for s in summary(rows))
    body = "".join(f"<tr class='{_STYLE[r['verdict']]}'>" + "".join(f"<td>{esc(str(c))}</td>" for c in _cells(r))
                   + "</tr>" for r in rows)
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
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; width: 100%; font-size: 0.85rem; margin-bottom: 1.5rem; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 0.35rem 0.5rem; text-align: left; vertical-align: top; }}
td.ok, tr.ok td:nth-child(4) {{ color: #1a7f37; }} td.open, tr.open td:nth-child(4) {{ color: #9a6700; }}
td.bad, tr.bad td:nth-child(4) {{ color: #cf222e; font-weight: bold; }}
.cards {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 1rem; }}
.card {{ border: 1px solid #ddd; border-radius: 8px; padding: 0.5rem 1rem; }}
.card img {{ max-width: 100%; }}
</style></head><body>
<h1>xailab — what reproduces</h1>
<p>Mode: {'quick (CI-sized: premises and identities only)' if quick else 'default'}. Every id of the register was
decided by the rule fixed before the run: a claim is <b>reproduced</b>, <b>contradicted</b> (a finding, not a
failure) or <b>inconclusive</b>; a premise or identity <b>holds</b>, or its notebook stopped.</p>
<table><tr><th>paper</th><th>ids</th>{''.join(f'<th>{c}</th>' for c in COLUMNS)}</tr>
{head}
</table>
<table><tr>{''.join(f'<th>{h}</th>' for h in HEADER)}</tr>
{body}
</table>
<h2>Notebooks</h2>
<div class="cards">{''.join(cards)}</div>
</body></html>
"""


def write_report(outcomes, out: Path, quick: bool, parameters: dict) -> None:
    """claims.json, claims.md, index.html, then manifest.json (last: the mark of a finished run)."""
    rows = register_rows(outcomes)
    unknown = {r["verdict"] for r in rows} - set(VERDICTS)
    if unknown:
        raise ValueError(f"verdicts outside the protocol: {unknown}")
    write_atomic(out / "claims.json", json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    write_atomic(out / "claims.md", claims_markdown(outcomes, quick))
    write_atomic(out / "index.html", index_html(outcomes, out, quick))
    manifest = {"quick": quick, "parameters": parameters, "notebooks": [asdict(o) for o in outcomes]}
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")


def write_stability(out: Path, seeds, threads: int) -> list[str]:
    """``stability.json`` and ``stability.md`` from the runs in ``out/seed-K/``: the verdict of every id at every
    seed (ids no run measured are left out), the ids whose verdict differs marked. Returns those ids."""
    table: dict[str, dict] = {}
    for seed in seeds:
        path = out / f"seed-{seed}" / "claims.json"
        rows = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
        for r in rows:
            table.setdefault(r["id"], {"paper": r["paper"], "claim": r["claim"]})[seed] = r["verdict"]
    measured = {i: t for i, t in table.items() if any(t.get(s) not in (None, NOT_MEASURED) for s in seeds)}
    moved = [i for i, t in measured.items() if len({t.get(s, "missing") for s in seeds}) > 1]
    write_atomic(out / "stability.json", json.dumps({"seeds": list(seeds), "threads": threads, "moved": moved,
                                                      "verdicts": measured}, indent=1, ensure_ascii=False) + "\n")
    lines = [f"# Verdict stability: seeds {', '.join(map(str, seeds))}, {threads} thread(s)", "",
             f"{len(measured)} ids measured; verdict differs across seeds for {len(moved)}"
             + (f": {', '.join(moved)}" if moved else "") + ".", "",
             "| id | claim | " + " | ".join(f"seed {s}" for s in seeds) + " | stable |",
             "|---" * (3 + len(seeds)) + "|"]
    for i, t in measured.items():
        lines.append(f"| {i} | {t['claim']} | " + " | ".join(t.get(s, "missing") for s in seeds)
                     + f" | {'**no**' if i in moved else 'yes'} |")
    write_atomic(out / "stability.md", "\n".join(lines) + "\n")
    return moved
