"""Run every notebook headlessly and write the scoreboard of what reproduces.

    python -m xailab.workbook [--quick] [--only NAME ...] [-p key=value ...] [--out build]

Each notebook is executed with papermill (kernel ``xailab``, parameters injected into its
``parameters`` cell), then written to ``OUT/NAME.ipynb`` with an HTML rendering ``OUT/NAME.html``.
Every claim a notebook checks with :func:`xailab.claims.check` is collected into
``OUT/claims.md`` and ``OUT/claims.json``; ``OUT/index.html`` links everything with each
notebook's key figure. A failing notebook is reported with its cell and error, the others still
run, and the exit status is 1.

Every file is written under a temporary name and renamed into place, and ``OUT/manifest.json``
(the record of a finished run) is written last: an interrupted run never leaves a file a later
run or a reader could mistake for a finished one.
"""
from __future__ import annotations

import argparse
import ast
import base64
import html
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
PARTIAL = ".partial"  # infix of every file still being written: NAME.partial.ipynb
KEY_FIGURE_TAG = "key-figure"


@dataclass
class Outcome:
    """What happened to one notebook."""

    name: str
    ok: bool
    seconds: float
    error: str = ""
    claims: list[dict] = field(default_factory=list)


# ----------------------------------------------------------------------------- files
def partial(path: Path) -> Path:
    """The temporary sibling ``path`` is written to before it is renamed into place."""
    return path.with_name(path.stem + PARTIAL + path.suffix)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling and an atomic rename."""
    tmp = partial(path)
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(tmp, mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as f:
        f.write(data)
    os.replace(tmp, path)


def clean_partials(out: Path) -> None:
    """Remove leftovers of an interrupted run."""
    for leftover in out.glob(f"*{PARTIAL}.*"):
        leftover.unlink()


# ----------------------------------------------------------------------------- arguments
def parse_parameter(text: str) -> tuple[str, object]:
    """``key=value`` with ``value`` a Python literal (``3``, ``0.5``, ``True``, ``'cnn'``);
    anything that is not a literal is taken as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"-p expects key=value with a Python name as key, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def select(notebooks: list[Path], only: list[str] | None) -> list[Path]:
    """The notebooks whose stem equals, or starts with, one of ``only`` (all when None)."""
    if not only:
        return notebooks
    chosen = [nb for nb in notebooks if any(nb.stem == o or nb.stem.startswith(o) for o in only)]
    unknown = [o for o in only if not any(nb.stem == o or nb.stem.startswith(o) for nb in notebooks)]
    if unknown:
        names = ", ".join(nb.stem for nb in notebooks)
        raise SystemExit(f"--only: no notebook matches {unknown}; known: {names}")
    return chosen


# ----------------------------------------------------------------------------- execution
def describe_failure(exc: BaseException) -> str:
    """One line naming the failing cell and the error."""
    cell = getattr(exc, "exec_count", None)
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename:
        where = f"cell [{cell}]" if cell is not None else "a cell"
        return f"{where} raised {ename}: {evalue}"
    return f"{type(exc).__name__}: {exc}"


def read_claims(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_notebook(path: Path, out: Path, parameters: dict, kernel: str) -> Outcome:
    """Execute one notebook with papermill and render it; never raises for a notebook error."""
    import papermill

    name = path.stem
    log = partial(out / f"{name}.claims.jsonl")
    log.unlink(missing_ok=True)
    executed = partial(out / f"{name}.ipynb")
    env = {"XAILAB_CLAIMS": str(log), "XAILAB_NOTEBOOK": name}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    start = time.perf_counter()
    error = ""
    try:
        papermill.execute_notebook(
            str(path), str(executed), parameters=parameters, kernel_name=kernel,
            cwd=str(path.parent), progress_bar=False, log_output=False,
        )
    except Exception as exc:  # papermill wraps the cell error; the notebook is still written
        error = describe_failure(exc)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    seconds = time.perf_counter() - start
    claims = read_claims(log)
    log.unlink(missing_ok=True)
    if executed.exists():
        render_html(executed, out / f"{name}.html")
        os.replace(executed, out / f"{name}.ipynb")
    return Outcome(name=name, ok=not error, seconds=seconds, error=error, claims=claims)


def render_html(notebook: Path, target: Path) -> None:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(notebook))
    write_atomic(target, body)


# ----------------------------------------------------------------------------- report
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


def claims_markdown(outcomes: list[Outcome], quick: bool) -> str:
    lines = [
        "# What reproduces",
        "",
        f"Mode: {'quick (CI-sized)' if quick else 'default'}. Regenerate with `make workbook`"
        f"{' QUICK=1' if quick else ''}.",
        "",
        "| paper | claim | measured | verdict | notebook |",
        "|---|---|---|---|---|",
    ]
    for o in outcomes:
        for c in o.claims:
            cells = [c["paper"], c["claim"], c["value"], c["verdict"], o.name]
            lines.append("| " + " | ".join(s.replace("|", "\\|") for s in cells) + " |")
        if not o.ok:
            lines.append(f"| — | notebook did not finish | {o.error.replace('|', '/')} | FAILED | {o.name} |")
    return "\n".join(lines) + "\n"


def index_html(outcomes: list[Outcome], out: Path, quick: bool) -> str:
    esc = html.escape
    rows = []
    for o in outcomes:
        for c in o.claims:
            css = "ok" if c["holds"] else ("honest" if "explained" in c["verdict"] else "bad")
            rows.append(f"<tr class='{css}'><td>{esc(c['paper'])}</td><td>{esc(c['claim'])}</td>"
                        f"<td>{esc(c['value'])}</td><td>{esc(c['verdict'])}</td>"
                        f"<td><a href='{esc(o.name)}.html'>{esc(o.name)}</a></td></tr>")
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
table {{ border-collapse: collapse; width: 100%; font-size: 0.9rem; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 0.35rem 0.5rem; text-align: left; vertical-align: top; }}
tr.ok td:nth-child(4) {{ color: #1a7f37; }} tr.honest td:nth-child(4) {{ color: #9a6700; }}
tr.bad td:nth-child(4) {{ color: #cf222e; font-weight: bold; }}
.cards {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 1rem; }}
.card {{ border: 1px solid #ddd; border-radius: 8px; padding: 0.5rem 1rem; }}
.card img {{ max-width: 100%; }}
</style></head><body>
<h1>xailab — what reproduces</h1>
<p>Mode: {'quick (CI-sized)' if quick else 'default'}. Each row is a claim a notebook checked on data it
generated; "not reproduced (explained)" means the notebook shows the numbers and says why at this scale.</p>
<table><tr><th>paper</th><th>claim</th><th>measured</th><th>verdict</th><th>notebook</th></tr>
{''.join(rows)}
</table>
<h2>Notebooks</h2>
<div class="cards">{''.join(cards)}</div>
</body></html>
"""


def write_report(outcomes: list[Outcome], out: Path, quick: bool, parameters: dict) -> None:
    claims = [dict(c, notebook=o.name) for o in outcomes for c in o.claims]
    write_atomic(out / "claims.json", json.dumps(claims, indent=1) + "\n")
    write_atomic(out / "claims.md", claims_markdown(outcomes, quick))
    write_atomic(out / "index.html", index_html(outcomes, out, quick))
    manifest = {"quick": quick, "parameters": parameters, "notebooks": [asdict(o) for o in outcomes]}
    write_atomic(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")


# ----------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xailab.workbook", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized runs (sets the parameter quick=True)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these notebooks (name or prefix, e.g. 02)")
    parser.add_argument("-p", dest="params", action="append", default=[], type=parse_parameter,
                        metavar="KEY=VALUE", help="inject a parameter into every notebook (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "build", help="where results go (default: build/)")
    parser.add_argument("--notebooks", type=Path, default=NOTEBOOKS, help=argparse.SUPPRESS)
    parser.add_argument("--kernel", default="xailab", help="Jupyter kernel name (default: xailab)")
    args = parser.parse_args(argv)

    # absolute, because each kernel runs in its notebook's folder and logs claims to a path under out
    args.out = args.out.resolve()
    notebooks = select(sorted(args.notebooks.glob("*.ipynb")), args.only)
    if not notebooks:
        print(f"no notebooks in {args.notebooks}")
        return 0
    parameters = dict(args.params)
    parameters["quick"] = bool(args.quick or parameters.get("quick", False))
    args.out.mkdir(parents=True, exist_ok=True)
    clean_partials(args.out)
    (args.out / "manifest.json").unlink(missing_ok=True)  # the old run is no longer "finished"

    outcomes: list[Outcome] = []
    try:
        for i, nb in enumerate(notebooks, 1):
            step = f"[{i}/{len(notebooks)}] {nb.stem}"
            # two lines, because the kernel may print its own warnings while it runs
            print(f"{step} running", flush=True)
            outcome = run_notebook(nb, args.out, parameters, args.kernel)
            outcomes.append(outcome)
            summary = f"{len(outcome.claims)} claims, {sum(c['holds'] for c in outcome.claims)} reproduced"
            print(f"{step} {'ok' if outcome.ok else 'FAILED'} ({outcome.seconds:.1f} s, {summary})", flush=True)
            if not outcome.ok:
                print(f"    {outcome.error}", flush=True)
    except KeyboardInterrupt:
        clean_partials(args.out)
        print("\ninterrupted: no report written; finished notebooks are in", args.out)
        return 130
    write_report(outcomes, args.out, parameters["quick"], parameters)
    failed = [o.name for o in outcomes if not o.ok]
    print(f"claims: {args.out / 'claims.md'}   report: {args.out / 'index.html'}")
    if failed:
        print("failed notebooks:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
